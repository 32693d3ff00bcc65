"""Stage base_model: resolve the configured base model (a source, lota.core.model_source) to a local HF
safetensors directory."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, AutoTokenizer

from lota.core.cli import arg, run_main, trust_remote_code_arg
from lota.core.errors import UserError
from lota.core.io import atomic_path
from lota.core.model_source import resolve_source

log = logging.getLogger("lota.base_model")


@dataclass
class BaseModelArgs:
    source: str = arg(help="package:PKG/FILE.gguf, a local model directory or .gguf file, or a hub id")
    out: Path = arg(help="output HF directory (config, tokenizer, model.safetensors)")
    trust_remote_code: bool = trust_remote_code_arg()


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
