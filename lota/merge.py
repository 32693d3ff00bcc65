"""Stage merge: several runs' task vectors merged onto the base model, one tensor at a time.

With delta_i = run_i - base, w_i each run's weight and lambda the scale of the merged delta:

- task_arithmetic: base + lambda * sum_i w_i delta_i (Ilharco et al. 2023).
- ties (Yadav et al. 2023): each delta_i trimmed to its largest-|delta| entries (`density` of
  them), a sign elected per entry by total mass (the sign of sum_i w_i delta_i, positive where it
  is 0), then the disjoint mean: base + lambda * sum_agree w_i delta_i / sum_agree w_i, over the
  runs whose trimmed delta is non-zero and has the elected sign.
- dare_ties, dare_linear (Yu et al. 2024): each entry of delta_i kept with probability `density`
  and rescaled by 1 / density, seeded per run and tensor; then the TIES sign election and the sum
  of the agreeing entries, or the plain weighted sum.
- sparse_sum (LoTA): the runs' sparse deltas added onto the base at their indices. Where the
  masks are disjoint, every task's entries equal its own model's, bit for bit.

Trimming follows mergekit (`granularity: per_tensor`: each tensor keeps max(1, int(density * n))
of its n entries; equal magnitudes go to the lowest index) or the original TIES code (`global`:
one threshold per task vector over all its entries, keeping |delta| >= its (N - int(density *
N))-th smallest magnitude, so int(density * N) + 1 entries barring ties). As in mergekit,
ties normalizes by the agreeing weights and dare_ties does not. Two differences from mergekit
0.1.5, both deliberate: DARE rescales by 1 / density as the paper does (mergekit restores each
tensor's L1 norm), and its random draws are seeded per tensor rather than drawn from one global
stream, so a merge is reproducible whatever the tensor order.

The base checkpoint and the runs' weights files are read one tensor at a time and the merged
tensor streamed to disk, so memory holds a few tensors, never a model: the global threshold
is found exactly by a two-pass radix selection over the magnitudes' float32 bit patterns.
"""

from __future__ import annotations

import contextlib
import logging
import math
import resource
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import torch
from tqdm import tqdm

from lota.core.cli import arg, check_range, run_main
from lota.core.errors import UserError
from lota.core.io import (
    SafetensorsStream,
    TensorReader,
    atomic_path,
    write_json,
)
from lota.core.modeling import open_checkpoint
from lota.deltas.merging import (
    RunDelta,
    combine,
    dare_drop,
    global_threshold,
    open_runs,
    tensor_seed,
    trim_below,
    trim_per_tensor,
)
from lota.pipeline.names import MERGE_METHODS

log = logging.getLogger("lota.merge")

Method = Literal[tuple(MERGE_METHODS.values())]
TRIMMED = ("ties",)
DROPPED = ("dare_ties", "dare_linear")
SIGN_ELECTED = ("ties", "dare_ties")


@dataclass
class MergeArgs:
    base: Path = arg(help="base HF model directory, the one every run was trained from")
    runs: list[Path] = arg(help="each task's run weights: dense fine-tuned weights or a LoTA sparse delta")
    out: Path = arg(help="output HF model directory (with merge.json: the settings and figures of the merge)")
    method: Method = arg(help="task_arithmetic, ties, dare_ties, dare_linear or sparse_sum")
    scale: float = arg(1.0, "lambda, the scale of the merged delta")
    weights: list[float] = arg([], "each run's weight w_i, in --runs order (default 1 each)")
    density: float = arg(1.0, "ties: fraction of each task vector's entries kept; dare: probability of keeping one")
    granularity: Literal["per_tensor", "global"] = arg(
        "per_tensor", "ties trimming: per tensor (mergekit) or one threshold per task vector (the original TIES)"
    )
    seed: int = arg(0, "seed of DARE's random drops")


def merge_tensor(
    args: MergeArgs, name: str, original: torch.Tensor, runs: Sequence[RunDelta], thresholds: Sequence[float]
) -> tuple[torch.Tensor, int]:
    """The merged tensor (in the base's dtype) and its count of sign conflicts."""
    if args.method == "sparse_sum":
        merged = original.clone()
        for run, weight in zip(runs, args.weights, strict=True):
            if name in run.shapes:
                indices, values = run.entries(name)
                factor = args.scale * weight
                # Unscaled values are added as they are, as export adds them, so disjoint entries stay exact.
                merged.view(-1).index_add_(0, indices, (values if factor == 1 else values * factor).to(merged.dtype))
        return merged, 0
    deltas = torch.empty((len(runs), *original.shape))
    for number, run in enumerate(runs):
        delta = run.delta(name, original)
        if args.method in TRIMMED:
            if args.granularity == "global":
                delta = trim_below(delta, thresholds[number])
            else:
                delta = trim_per_tensor(delta, args.density)
        if args.method in DROPPED:
            generator = torch.Generator().manual_seed(tensor_seed(args.seed, number, name))
            delta = dare_drop(delta, args.density, generator)
        deltas[number] = delta
    del delta
    mixed, conflicts = combine(
        deltas,
        torch.tensor(args.weights),
        args.scale,
        elect=args.method in SIGN_ELECTED,
        mean=args.method == "ties",
    )
    return mixed.add_(original).to(original.dtype), conflicts


def check_args(args: MergeArgs) -> None:
    if len(args.runs) < 2:
        raise UserError(f"--runs names {len(args.runs)} run(s): a merge needs two or more")
    if args.weights and len(args.weights) != len(args.runs):
        raise UserError(f"--weights gives {len(args.weights)} values for {len(args.runs)} runs")
    if not all(math.isfinite(value) for value in [args.scale, *args.weights]):
        raise UserError("--scale and --weights must be finite numbers")
    check_range("density", args.density, 0.0, 1.0)
    if args.density == 0 and args.method in TRIMMED + DROPPED:
        raise UserError(f"density 0 drops every entry: {args.method} needs a density in (0, 1]")


def thresholds_of(
    args: MergeArgs, base: TensorReader, names: list[str], total: int, runs: list[RunDelta]
) -> list[float] | None:
    """Each run's global trim threshold over its `total` entries (ties with granularity global), else None."""
    if args.method not in TRIMMED or args.granularity != "global":
        return None

    def deltas_of(run: RunDelta) -> Callable[[], Iterable[torch.Tensor]]:
        return lambda: (run.delta(name, base.get(name)) for name in names)

    return [global_threshold(deltas_of(run), total, args.density) for run in runs]


def merge(args: MergeArgs) -> dict:
    """Merge the runs onto the base into an HF directory with merge.json; returns that summary."""
    check_args(args)
    args = replace(args, weights=args.weights or [1.0] * len(args.runs))
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        base = stack.enter_context(open_checkpoint(args.base))
        runs = open_runs(args.runs, base, stack)
        dense = [run.path for run in runs if not run.sparse]
        if args.method == "sparse_sum" and dense:
            raise UserError(f"sparse_sum adds LoTA sparse deltas; {dense[0]} holds dense weights")
        names = base.names()
        layout = {base.stored_name(name): base.layout(name) for name in names}  # written as the base stores them
        entries = sum(shape.numel() for _, shape in layout.values())
        thresholds = thresholds_of(args, base, names, entries, runs)
        conflicts = changed = 0
        tmp = stack.enter_context(atomic_path(args.out))
        shutil.copytree(args.base, tmp, ignore=shutil.ignore_patterns("*.safetensors", "*.safetensors.index.json"))
        with open(tmp / "model.safetensors", "wb") as file:
            stream = SafetensorsStream(file, layout, {"format": "pt"})
            for name in tqdm(names, desc=f"merge ({args.method})", unit="tensor"):
                original = base.get(name)
                merged, tensor_conflicts = merge_tensor(args, name, original, runs, thresholds or [])
                conflicts += tensor_conflicts
                changed += int((merged != original).sum())
                stream.write(base.stored_name(name), merged)
            stream.close()
        summary = {
            "settings": {key: str(value) if isinstance(value, Path) else value for key, value in asdict(args).items()}
            | {"runs": [str(path) for path in args.runs]},
            "tensors": len(names),
            "entries": entries,
            "changed_entries": changed,
            "sign_conflicts": conflicts,
            "thresholds": thresholds,
            "wall_s": time.perf_counter() - started,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
        write_json(tmp / "merge.json", summary)
    log.info(
        "%s of %d runs: %d tensors in %.1f s, peak RSS %.0f MB, %d entries with a sign conflict -> %s",
        args.method,
        len(runs),
        summary["tensors"],
        summary["wall_s"],
        summary["peak_rss_mb"],
        conflicts,
        args.out,
    )
    return summary


def run(args: MergeArgs) -> None:
    """Merge several runs' task vectors onto the base model into an HF directory."""
    merge(args)


if __name__ == "__main__":
    run_main(MergeArgs, run)
