"""Checking a workflow config against its JSON schema, with one-line messages naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import yaml


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
