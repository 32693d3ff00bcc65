"""Stage peft_adapter: a LoTA run's sparse delta as a PEFT Super-Tuning adapter folder, which
`PeftModel.from_pretrained(base, folder)` loads (lota.deltas.peft says what such an adapter can carry)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lota.core.cli import arg, check_range, run_main, trust_remote_code_arg
from lota.deltas.peft import export_adapter


@dataclass
class PeftAdapterArgs:
    base: Path = arg(help="base HF model directory the run started from")
    weights: Path = arg(help="the LoTA run's sparse delta")
    out: Path = arg(help="output adapter folder (adapter_config.json, adapter_model.safetensors)")
    base_name: str = arg(
        default="",
        help="the base model's name on the hub, written as base_model_name_or_path (default: --base)",
    )
    max_padding: float = arg(
        default=0.5,
        help="the largest share of the adapter's entries that may be zero-valued padding (0 to 1)",
    )
    trust_remote_code: bool = trust_remote_code_arg()


def run(args: PeftAdapterArgs) -> None:
    """Write a LoTA run's sparse delta as a PEFT Super-Tuning adapter folder."""
    check_range("max_padding", args.max_padding, 0.0, 1.0)
    export_adapter(args.base, args.weights, args.out, args.base_name, args.trust_remote_code, args.max_padding)


if __name__ == "__main__":
    run_main(PeftAdapterArgs, run)
