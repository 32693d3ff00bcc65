"""Stage base_model: resolve the configured base model (a source, lota.core.model_source) to a local HF
safetensors directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lota.core.cli import arg, run_main, trust_remote_code_arg
from lota.core.modeling import prepare_base_model


@dataclass
class BaseModelArgs:
    source: str = arg(help="package:PKG/FILE.gguf, a local model directory or .gguf file, or a hub id")
    out: Path = arg(help="output HF directory (config, tokenizer, model.safetensors)")
    trust_remote_code: bool = trust_remote_code_arg()


def run(args: BaseModelArgs) -> Path:
    """Resolve the base model to a local HF safetensors directory."""
    return prepare_base_model(args.source, args.out, args.trust_remote_code)


if __name__ == "__main__":
    run_main(BaseModelArgs, run)
