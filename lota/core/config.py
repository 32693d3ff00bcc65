"""Checking a workflow config against its JSON schema, with one-line messages naming the key;
and the protocol a folder's outputs were built under, so that two protocols never share one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from lota.core.errors import UserError

PROTOCOL_RECORD = Path("work/protocol.json")


def load_schema(path: Path) -> dict[str, Any]:
    return yaml.safe_load(Path(path).read_text())


def config_errors(config: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """Every schema violation as 'config key a.b.c: message', most specific first."""
    validator = jsonschema.Draft202012Validator(schema)
    messages = []
    for error in sorted(validator.iter_errors(config), key=jsonschema.exceptions.relevance):
        key = ".".join(str(part) for part in error.absolute_path) or "(top level)"
        message = error.message
        if error.context:  # a value that fits none of anyOf's forms: what each form wanted
            message = "; or ".join(dict.fromkeys(part.message for part in error.context))
        messages.append(f"config key {key}: {message}")
    return messages


def check_protocol(protocol: str, record: Path = PROTOCOL_RECORD) -> None:
    """UserError when this folder's outputs were built under another protocol (config key
    protocol): reusing them would mix, and rebuilding them would overwrite, the other's runs."""
    if not record.exists():
        return
    built_under = json.loads(record.read_text())["protocol"]
    if built_under != protocol:
        raise UserError(
            f"config key protocol is {protocol!r}, but this folder's outputs were built under {built_under!r} "
            f"({record}): run it in a folder of its own, e.g. snakemake --directory runs/{protocol} ..."
        )


def record_protocol(protocol: str, record: Path = PROTOCOL_RECORD) -> None:
    """Write the protocol this folder's outputs are built under (atomically)."""
    # Imported here: lota.core.io imports torch, which planning (every import of this module) does not need.
    from lota.core.io import write_json

    write_json(record, {"protocol": protocol})
