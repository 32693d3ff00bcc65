"""Stage base_model: resolve the configured base model to a local HF safetensors directory.

A source is one of
  package:PKG/FILE.gguf   a GGUF file shipped inside an installed Python package (offline default)
  /a/local/dir            an HF model directory (or a path to a .gguf file)
  org/name                a hub id, downloaded by transformers
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, AutoTokenizer

from lota.cli import arg, run_main, trust_remote_code_arg
from lota.errors import UserError
from lota.io import atomic_path

log = logging.getLogger("lota.base_model")
PACKAGE_PREFIX = "package:"


@dataclass
class BaseModelArgs:
    source: str = arg(help="package:PKG/FILE.gguf, a local model directory or .gguf file, or a hub id")
    out: Path = arg(help="output HF directory (config, tokenizer, model.safetensors)")
    trust_remote_code: bool = trust_remote_code_arg()


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


def prepare_base_model(source: str, out: Path, trust_remote_code: bool = False) -> Path:
    location, gguf_file = resolve_source(source)
    options = {"gguf_file": gguf_file} if gguf_file else {}
    log.info("loading %s%s", location, f" ({gguf_file})" if gguf_file else "")
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code, **options)
        model = AutoModelForCausalLM.from_pretrained(
            location, dtype=torch.float32, trust_remote_code=trust_remote_code, **options
        )
    except (OSError, ValueError, ImportError, SafetensorError) as error:  # SafetensorError: a truncated checkpoint
        raise UserError(f"cannot load base model {source!r}: {str(error).splitlines()[0]}") from None
    # A dequantized GGUF still carries its quantization_config, which save_pretrained refuses.
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
        model.hf_quantizer = None
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    with atomic_path(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    log.info("wrote %s (%d parameters)", out, sum(p.numel() for p in model.parameters()))
    return out


def run(args: BaseModelArgs) -> Path:
    """Resolve the base model to a local HF safetensors directory."""
    return prepare_base_model(args.source, args.out, args.trust_remote_code)


if __name__ == "__main__":
    run_main(BaseModelArgs, run)
