"""Typed command lines for the stages: a dataclass of arguments becomes an argparse parser.

Each field's `metadata["help"]` is its documentation; the type annotation gives the parsing
(`Path`, `int`, `float`, `str`, `bool` as `--x/--no-x`, `Literal[...]` as choices,
`list[str]` as several values, `X | None` as optional). A field may declare its bounds
(`metadata["bounds"]`, JSON schema's keywords), which check_bounds checks and
schema_properties renders with the rest of the field as JSON schema.
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

from lota.core.errors import UserError

ArgsT = TypeVar("ArgsT")


def arg(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: float | None = None,
    exclusive_maximum: float | None = None,
) -> Any:
    """A documented dataclass field; no default means the option is required. The bounds, where
    given, are the values it may take (checked by check_bounds)."""
    limits = {
        "minimum": minimum,
        "maximum": maximum,
        "exclusiveMinimum": exclusive_minimum,
        "exclusiveMaximum": exclusive_maximum,
    }
    metadata = {"help": help, "bounds": {key: value for key, value in limits.items() if value is not None}}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def trust_remote_code_arg() -> Any:
    """The --trust-remote-code option every stage that loads a model shares; off by default."""
    return arg(False, "allow code from the model repository to run (a security risk)")


def task_definitions_arg() -> Any:
    """The --task-definitions option of the stages that read tasks: the config's own tasks."""
    return arg("", "JSON object: the definitions (config key tasks.<name>.define) of the tasks here the config defines")


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


def check_bounds(args: Any) -> None:
    """UserError naming the first of `args`' fields outside the bounds its arg() declares (a None
    value is unset, not checked).

    In two steps, each with its own message: a value must first lie in the closed range of its
    bounds (`x must be in [low, high]`, or `x must be >= low` with no upper bound; NaN never
    does), then off an exclusive bound (`x must be > low`, `x must be < high`).
    """
    for field in dataclasses.fields(args):
        bounds = field.metadata.get("bounds") or {}
        value = getattr(args, field.name)
        if not bounds or value is None:
            continue
        low = bounds.get("minimum", bounds.get("exclusiveMinimum"))
        high = bounds.get("maximum", bounds.get("exclusiveMaximum"))
        if math.isnan(value) or (low is not None and value < low) or (high is not None and value > high):
            if low is not None and high is not None:
                raise UserError(f"{field.name} must be in [{low}, {high}], got {value}")
            if low is not None:
                raise UserError(f"{field.name} must be {'>=' if 'minimum' in bounds else '>'} {low}, got {value}")
            raise UserError(f"{field.name} must be {'<=' if 'maximum' in bounds else '<'} {high}, got {value}")
        if value == bounds.get("exclusiveMinimum"):
            raise UserError(f"{field.name} must be > {low}, got {value}")
        if value == bounds.get("exclusiveMaximum"):
            raise UserError(f"{field.name} must be < {high}, got {value}")


_SCHEMA_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", Path: "string"}


def schema_properties(*groups: type, omit: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """The fields of the dataclasses `groups` (but `omit`), in order, as JSON schema properties:
    type (an enum for a Literal), bounds, default and description (the help)."""
    properties = {}
    for group in groups:
        hints = typing.get_type_hints(group)
        for field in dataclasses.fields(group):
            if field.name in omit:
                continue
            annotation = _strip_optional(hints[field.name])
            if typing.get_origin(annotation) is Literal:
                choices = list(typing.get_args(annotation))
                schema: dict[str, Any] = {"type": _SCHEMA_TYPES[type(choices[0])], "enum": choices}
            elif typing.get_origin(annotation) is list:
                schema = {"type": "array", "items": {"type": _SCHEMA_TYPES[typing.get_args(annotation)[0]]}}
            else:
                schema = {"type": _SCHEMA_TYPES[annotation]}
            if annotation is not hints[field.name]:  # X | None
                schema["type"] = [schema["type"], "null"]
            schema |= field.metadata.get("bounds") or {}
            if field.default is not dataclasses.MISSING:
                schema["default"] = field.default
            elif field.default_factory is not dataclasses.MISSING:
                schema["default"] = field.default_factory()
            schema["description"] = field.metadata.get("help", "")
            properties[field.name] = schema
    return properties
