"""Stage export: a trained run as an HF directory (config, tokenizer, safetensors) that
`AutoModelForCausalLM.from_pretrained` loads as it is.

The base model's weights are loaded and the run's weights applied, file by file in the order
given: dense weights replace the base's, a sparse delta is added at its indices (frozen entries
stay the base's bits), a LoRA adapter is merged into the weights it adapts. A RoSA run gives its
sparse delta, then its adapter.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from lota.core.cli import arg, existing_file, run_main, trust_remote_code_arg
from lota.core.errors import UserError
from lota.core.io import WEIGHTS_FORMAT, TensorReader, atomic_path
from lota.core.modeling import load_model, load_tokenizer
from lota.deltas.lora import is_lora_adapter, merge_lora_adapter
from lota.deltas.sparse import apply_sparse_delta, is_sparse_delta, read_sparse_delta

log = logging.getLogger("lota.export")


@dataclass
class ExportArgs:
    base: Path = arg(help="base HF model directory")
    weights: list[Path] = arg(
        help="the run's weights files (dense weights, a sparse delta, a LoRA adapter), applied in order"
    )
    out: Path = arg(help="output HF model directory")
    trust_remote_code: bool = trust_remote_code_arg()


def apply_weights(model: torch.nn.Module, weights: Path) -> torch.nn.Module:
    """The base `model` with a run's weights applied (in place, except a LoRA merge's new module)."""
    parameters = dict(model.named_parameters())
    with TensorReader([weights]) as reader:
        if is_lora_adapter(reader):
            return merge_lora_adapter(model, reader, weights)
        if is_sparse_delta(reader):
            delta, shapes = read_sparse_delta(reader)
            apply_sparse_delta(parameters, delta, shapes, weights)
            return model
        reader.require_format(WEIGHTS_FORMAT, weights, "run's weights file (dense weights, sparse delta or LoRA)")
        with torch.no_grad():
            for name in reader.names():
                if name not in parameters:
                    raise UserError(f"weights {weights} have {name}, which the model does not have")
                tensor = reader.get(name)
                if tensor.shape != parameters[name].shape:
                    expected = tuple(parameters[name].shape)
                    raise UserError(
                        f"weights {weights}: {name} has shape {tuple(tensor.shape)}, the model's is {expected}"
                    )
                parameters[name].copy_(tensor)
    return model


def export(base: Path, weights: Sequence[Path], out: Path, trust_remote_code: bool = False) -> Path:
    for path in weights:
        existing_file(path, "run weights")
    tokenizer = load_tokenizer(base, trust_remote_code)
    model = load_model(base, torch.float32, trust_remote_code, torch.device("cpu"))
    for path in weights:
        model = apply_weights(model, path)
    with atomic_path(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    log.info("exported %s + %s -> %s", base, " + ".join(map(str, weights)), out)
    return out


def run(args: ExportArgs) -> None:
    """Write a trained run as a loadable HF model directory."""
    export(args.base, args.weights, args.out, args.trust_remote_code)


if __name__ == "__main__":
    run_main(ExportArgs, run)
