"""Stage complement_mask: every covered entry that none of the given masks makes trainable.

This is the official LoTTO code's flip_mask: task B's calibration run trains what task A's
mask left frozen, and B's mask is then extracted from that run's delta. The given masks must
cover the same tensors with the same shapes; the output keeps their tensors and records its
sources in the metadata.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from lota.core.cli import arg, run_main
from lota.core.errors import UserError
from lota.deltas.masks import load_masks_alike, mask_union, save_mask

log = logging.getLogger("lota.complement_mask")


@dataclass
class ComplementMaskArgs:
    masks: list[Path] = arg(help="masks of the earlier tasks (their union is left out)")
    out: Path = arg(help="output mask safetensors")


def complement(masks: Iterable[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Per tensor, the entries no mask makes trainable (the masks cover the same tensors)."""
    return {name: ~union for name, union in mask_union(masks).items()}


def run(args: ComplementMaskArgs) -> None:
    """Write the complement of the union of the given masks."""
    if not args.masks:
        raise UserError("--masks names no mask")
    flipped = complement(load_masks_alike(args.masks))
    save_mask(args.out, flipped, {"complement_of": [str(path) for path in args.masks]})
    trainable = sum(int(mask.sum()) for mask in flipped.values())
    total = sum(mask.numel() for mask in flipped.values())
    log.info("%d of %d entries trainable (%.4f) -> %s", trainable, total, trainable / total, args.out)


if __name__ == "__main__":
    run_main(ComplementMaskArgs, run)
