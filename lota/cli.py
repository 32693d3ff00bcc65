"""Typed command lines for the stages: a dataclass of arguments becomes an argparse parser.

Each field's `metadata["help"]` is its documentation; the type annotation gives the parsing
(`Path`, `int`, `float`, `str`, `bool` as `--x/--no-x`, `Literal[...]` as choices,
`list[str]` as several values, `X | None` as optional).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, NoReturn, TypeVar

from lota.errors import UserError

ArgsT = TypeVar("ArgsT")


def arg(default: Any = dataclasses.MISSING, help: str = "") -> Any:
    """A documented dataclass field; no default means the option is required."""
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def trust_remote_code_arg() -> Any:
    """The --trust-remote-code option every stage that loads a model shares; off by default."""
    return arg(False, "allow code from the model repository to run (a security risk)")


def threads_arg() -> Any:
    """The --threads option of the compute-heavy stages."""
    return arg(0, "CPU threads; 0 uses every CPU this process may run on")


def _strip_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return members[0]
    return annotation


class OneLineErrorParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors (a missing option, a value of the wrong type) are one
    line, `error: <message>`, like every other bad input, instead of the whole usage text."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}\n")


def build_parser(args_type: type, description: str) -> argparse.ArgumentParser:
    parser = OneLineErrorParser(description=description)
    hints = typing.get_type_hints(args_type)
    for field in dataclasses.fields(args_type):
        annotation = _strip_optional(hints[field.name])
        flag = "--" + field.name.replace("_", "-")
        options: dict[str, Any] = {"help": field.metadata.get("help", "")}
        if field.default is not dataclasses.MISSING:
            options["default"] = field.default
        elif field.default_factory is not dataclasses.MISSING:
            options["default"] = field.default_factory()
        else:
            options["required"] = True
        if options.get("default") not in (None, "", []):
            options["help"] += f" (default: {options['default']})"
        origin = typing.get_origin(annotation)
        if annotation is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif origin is Literal:
            options["choices"] = list(typing.get_args(annotation))
            options["type"] = type(options["choices"][0])
        elif origin is list:
            options["nargs"] = "*"
            options["type"] = typing.get_args(annotation)[0]
        else:
            options["type"] = annotation
        parser.add_argument(flag, dest=field.name, **options)
    return parser


def parse_args(args_type: type[ArgsT], argv: Sequence[str] | None, description: str) -> ArgsT:
    namespace = build_parser(args_type, description).parse_args(argv)
    return args_type(**vars(namespace))


def run_main(
    args_type: type[ArgsT],
    run: Callable[[ArgsT], Any],
    argv: Sequence[str] | None = None,
    description: str | None = None,
) -> None:
    """Parse argv into `args_type`, call `run`, and turn a UserError into one line and exit 1."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(args_type, argv, description or (run.__doc__ or "").strip())
    try:
        run(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None


def existing_file(path: Path, what: str) -> Path:
    """`path` if it is a readable file, else a UserError naming it as `what`."""
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    return path


def check_minimums(args: Any, minimums: dict[str, float]) -> None:
    """UserError naming the first of `args`' fields below its minimum (a None value is unset, not checked)."""
    for name, low in minimums.items():
        value = getattr(args, name)
        if value is not None and value < low:
            raise UserError(f"{name} must be >= {low}, got {value}")


def check_range(name: str, value: float, low: float, high: float, high_open: bool = False) -> None:
    """UserError unless low <= value <= high (or < high when `high_open`)."""
    above = value >= high if high_open else value > high
    if math.isnan(value) or value < low or above:
        bracket = ")" if high_open else "]"
        raise UserError(f"{name} must be in [{low}, {high}{bracket}, got {value}")
