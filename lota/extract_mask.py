"""Stage extract_mask: the LoTA mask, the largest |delta| entries of the covered tensors.

The strategy says what ranks the entries: the task vector's magnitude (LoTA, the default), the
base weights' magnitude, gradient scores of the base model (lota.fisher: RoSA's empirical
Fisher, or the mean gradient), or seeded random scores (a uniformly random mask of that size).
Every strategy has the same sparsity semantics and the same output: a mask file (lota.deltas.masks,
which holds the selection, its tie-breaking and the file format).

`--rule official` sizes the mask as the official LoTA code does: the threshold is the
int((1 - s) * N)-th largest score and every entry at or above it trains, ties included, so the
mask may be larger than that count (the log says by how much); the default, exact, trains exactly
round((1 - s) * N).

For a later task in a sequence (LoTTO), `--exclude` names the earlier tasks' masks: their
trainable entries are never chosen, so every task's sparse delta is disjoint from the others.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from lota.core.cli import arg, check_range, existing_file, run_main
from lota.core.errors import UserError
from lota.core.io import FISHER_FORMAT, TASK_VECTOR_FORMAT, TensorReader
from lota.core.modeling import open_checkpoint
from lota.core.scope import DEFAULT_SCOPE, in_scope, resolve_scope
from lota.deltas.masks import excluded_entries, save_mask, select_mask, trainable_count
from lota.pipeline.names import MASK_RULES, RANKINGS

log = logging.getLogger("lota.extract_mask")


@dataclass
class ExtractMaskArgs:
    out: Path = arg(help="output mask safetensors")
    sparsity: float = arg(help="fraction of covered entries kept FROZEN, in [0, 1)")
    strategy: Literal[RANKINGS] = arg(
        "task_vector", "what ranks the entries: |task vector| (LoTA), |base weight|, gradient scores, or random ones"
    )
    task_vector: Path | None = arg(None, "safetensors of deltas (finetuned - base): strategy task_vector's scores")
    scores: Path | None = arg(None, "gradient scores of lota.fisher: strategy fisher's scores")
    base: Path | None = arg(None, "base HF model directory: strategy base_magnitude's scores, strategy random's shapes")
    seed: int = arg(0, "seed of strategy random")
    granularity: Literal["global", "per_tensor"] = arg(
        "global", "one threshold for all covered tensors, or one per tensor"
    )
    rule: Literal[MASK_RULES] = arg(
        "exact",
        "exactly round((1 - s) * N) entries, or the official code's: every entry at or above the"
        " int((1 - s) * N)-th largest score, ties included",
    )
    scope: list[str] = arg(DEFAULT_SCOPE, "module names whose .weight tensors the mask covers; auto: every projection")
    exclude: list[Path] = arg(
        [], "masks of earlier tasks in a sequence (LoTTO): entries they make trainable are never chosen"
    )


def entry_scores(args: ExtractMaskArgs) -> tuple[dict[str, torch.Tensor], str, list[str]]:
    """Per covered tensor, the scores whose largest magnitudes become trainable, what they are of, and
    the scope's module names ('auto' resolved to the model's projections)."""
    files = {"task_vector": (args.task_vector, "--task-vector", TASK_VECTOR_FORMAT, "task vector")}
    files["fisher"] = (args.scores, "--scores", FISHER_FORMAT, "gradient scores file")
    if args.strategy in files:
        source, option, file_format, what = files[args.strategy]
        if source is None:
            raise UserError(f"strategy {args.strategy} needs {option}")
        existing_file(source, what)
        with TensorReader([source]) as reader:
            reader.require_format(file_format, source, what)
            scope = resolve_scope(args.scope, reader.shapes())
            scores = {name: reader.get(name) for name in reader.names() if in_scope(name, scope)}
    else:
        if args.base is None:
            raise UserError(f"strategy {args.strategy} needs --base (the base model directory)")
        with open_checkpoint(args.base) as reader:
            scope = resolve_scope(args.scope, reader.shapes())
            names = [name for name in reader.names() if in_scope(name, scope)]
            if args.strategy == "base_magnitude":
                scores = {name: reader.get(name).float() for name in names}
            else:
                generator = torch.Generator().manual_seed(args.seed)
                scores = {name: torch.rand(reader.layout(name)[1], generator=generator) for name in names}
        source, what = args.base, "base model"
    for name, score in scores.items():
        if not torch.isfinite(score).all():
            raise UserError(f"{what} {source}: {name} has non-finite entries")
    return scores, what, scope


def run(args: ExtractMaskArgs) -> None:
    """Write the mask of the top-scoring entries (by default, the top-|delta|) at the given sparsity."""
    check_range("sparsity", args.sparsity, 0.0, 1.0, high_open=True)
    scores, what, scope = entry_scores(args)
    excluded = excluded_entries(args.exclude, scores, against=f"the {what} in scope")
    masks = select_mask(scores, args.sparsity, args.granularity, excluded, args.rule)
    trainable = sum(int(m.sum()) for m in masks.values())
    if trainable == 0:
        raise UserError(f"sparsity {args.sparsity} leaves no trainable entry among {len(scores)} tensors")
    info = {
        "strategy": args.strategy,
        **({"seed": args.seed} if args.strategy == "random" else {}),
        "sparsity": args.sparsity,
        "granularity": args.granularity,
        "rule": args.rule,
        "scope": scope,
        "excluded": [str(path) for path in args.exclude],
    }
    save_mask(args.out, masks, info)
    total = sum(m.numel() for m in masks.values())
    tie_note = ""
    if args.rule == "official":
        per_tensor = args.granularity == "per_tensor"
        group_sizes = [m.numel() for m in masks.values()] if per_tensor else [total]
        counted = sum(trainable_count(args.sparsity, size, "official") for size in group_sizes)
        where = " per tensor" if per_tensor else ""
        tie_note = f", {trainable - counted} of them beyond int((1 - s) * N){where}: ties at the threshold"
    log.info(
        "%d of %d entries trainable (%.4f%s) in %d tensors -> %s",
        trainable,
        total,
        trainable / total,
        tie_note,
        len(masks),
        args.out,
    )


if __name__ == "__main__":
    run_main(ExtractMaskArgs, run)
