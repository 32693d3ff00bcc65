"""Where the base model comes from: a source (config base_model.source) as what `from_pretrained`
accepts. Light on imports, so that the plan checks a source before any job runs.

A source is one of
  package:PKG/FILE.gguf   a GGUF file shipped inside an installed Python package (offline default)
  /a/local/dir            an HF model directory (or a path to a .gguf file)
  org/name                a hub id, downloaded by transformers
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from lota.core.errors import UserError

PACKAGE_PREFIX = "package:"


def resolve_source(source: str) -> tuple[str, str | None]:
    """(directory or hub id, gguf file name or None) that `from_pretrained` accepts."""
    if source.startswith(PACKAGE_PREFIX):
        package, _, file_name = source[len(PACKAGE_PREFIX) :].partition("/")
        spec = importlib.util.find_spec(package) if package else None
        if spec is None or not spec.submodule_search_locations:
            raise UserError(f"base model package {package!r} is not installed (source {source!r})")
        package_dir = Path(next(iter(spec.submodule_search_locations)))
        if not (package_dir / file_name).is_file():
            raise UserError(f"base model file {file_name!r} not found in package {package} ({package_dir})")
        return str(package_dir), file_name
    path = Path(source).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UserError(f"base model file not found: {path}")
        return str(path.parent), path.name
    if path.is_file():
        raise UserError(f"base model source is a file, neither a model directory nor a .gguf file: {path}")
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(f"base model directory has no config.json: {path}")
        return str(path), None
    if source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise UserError(f"base model not found: {source!r} is neither a local path nor a hub id")
    return source, None
