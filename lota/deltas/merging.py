"""The tensor operations of merging task vectors, pure functions on small tensors (the merge stage,
lota.merge, streams them over checkpoints): trimming per tensor or below a task vector's global
threshold (found exactly by a two-pass radix selection over the magnitudes' float32 bit patterns),
DARE's drops seeded per tensor, TIES' sign election and the weighted (or disjoint-mean) combination;
and RunDelta, one run's change from the base, read a tensor at a time."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch

from lota.core.cli import existing_file
from lota.core.errors import UserError
from lota.core.io import (
    LORA_ADAPTER_FORMAT,
    WEIGHTS_FORMAT,
    TensorReader,
)
from lota.deltas.masks import top_k_mask
from lota.deltas.sparse import check_entries, is_sparse_delta, read_sparse_entries, sparse_delta_shapes

# --- pure tensor functions ---------------------------------------------------------------


def trim_per_tensor(delta: torch.Tensor, density: float) -> torch.Tensor:
    """delta with all but its max(1, int(density * n)) largest-|delta| entries zeroed (mergekit's)."""
    if density >= 1:
        return delta
    n = delta.numel()
    k = max(1, int(density * n))
    threshold = kth_smallest_magnitude(lambda: [delta], n - k + 1)
    return delta * top_k_mask(delta.abs().flatten(), k, threshold).view(delta.shape)


def trim_below(delta: torch.Tensor, threshold: float) -> torch.Tensor:
    """delta with the entries of magnitude below `threshold` zeroed."""
    return delta * (delta.abs() >= threshold)


def kth_smallest_magnitude(tensors: Callable[[], Iterable[torch.Tensor]], k: int) -> float:
    """The k-th smallest |x| (1-based) over every entry of the tensors `tensors()` yields, exactly.

    Non-negative float32 values order like their bit patterns read as integers, so two streaming
    passes of histograms (the high 16 bits, then the low 16 bits within the chosen bucket) find
    it while holding one tensor at a time.
    """

    def bits(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.detach().float().abs().flatten().view(torch.int32)

    high = torch.zeros(1 << 16, dtype=torch.int64)
    for tensor in tensors():
        high += torch.bincount(bits(tensor) >> 16, minlength=1 << 16)
    total = int(high.sum())
    if not 1 <= k <= total:
        raise ValueError(f"k={k} outside [1, {total}]")
    below = high.cumsum(0)
    bucket = int(torch.searchsorted(below, k))
    rank = k - (int(below[bucket - 1]) if bucket else 0)
    low = torch.zeros(1 << 16, dtype=torch.int64)
    for tensor in tensors():
        pattern = bits(tensor)
        low += torch.bincount(pattern[(pattern >> 16) == bucket] & 0xFFFF, minlength=1 << 16)
    offset = int(torch.searchsorted(low.cumsum(0), rank))
    return torch.tensor([(bucket << 16) | offset], dtype=torch.int32).view(torch.float32).item()


def global_threshold(tensors: Callable[[], Iterable[torch.Tensor]], total: int, density: float) -> float:
    """The original TIES code's trim threshold of one task vector of `total` entries: its
    (total - int(density * total))-th smallest magnitude (0: keep everything)."""
    rank = total - int(density * total)
    return 0.0 if rank < 1 else kth_smallest_magnitude(tensors, rank)


def dare_drop(delta: torch.Tensor, density: float, generator: torch.Generator) -> torch.Tensor:
    """DARE: each entry kept with probability `density` and divided by it, so the expectation is delta."""
    if density >= 1:
        return delta
    keep = torch.rand(delta.shape, generator=generator) < density
    return delta * keep / density


def elect_positive(weighted: torch.Tensor) -> torch.Tensor:
    """Per entry, whether the sign elected by total mass over runs (dim 0) is + (a zero sum elects +)."""
    return weighted.sum(dim=0) >= 0


def combine(
    deltas: torch.Tensor, weights: torch.Tensor, scale: float, elect: bool, mean: bool = False
) -> tuple[torch.Tensor, int]:
    """lambda times the weighted sum of stacked deltas (dim 0: runs), which are overwritten. With
    `elect`, only the entries that agree with the elected sign count, and with `mean` their sum is
    divided by their total weight (TIES's disjoint mean). Also returns how many entries had a
    non-zero delta against the elected sign. In-place steps and boolean masks keep the work to a
    few copies of one tensor."""
    weighted = deltas.mul_(weights.to(deltas.dtype).view(-1, *([1] * (deltas.dim() - 1))))
    conflicts, divisor = 0, None
    if elect:
        agree = torch.where(elect_positive(weighted), weighted > 0, weighted < 0)
        conflicts = int(((weighted != 0) & ~agree).any(dim=0).sum())
        weighted.mul_(agree)
        if mean:
            divisor = torch.zeros(weighted.shape[1:], dtype=weighted.dtype)
            for weight, agreeing in zip(weights.tolist(), agree, strict=True):
                divisor.add_(agreeing.to(divisor.dtype), alpha=weight)
    mixed = weighted.sum(dim=0)
    if divisor is not None:
        mixed.div_(torch.where(divisor == 0, 1.0, divisor))
    return mixed.mul_(scale) if scale != 1 else mixed, conflicts


def tensor_seed(seed: int, run: int, name: str) -> int:
    """A stable 63-bit seed per (seed, run, tensor), independent of the order tensors are merged in."""
    digest = hashlib.sha256(f"{seed}:{run}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


# --- streaming over checkpoints ----------------------------------------------------------


class RunDelta:
    """One run's change from the base, tensor by tensor: dense weights minus the base's, or a
    sparse delta's values at its indices. Nothing is read before a tensor is asked for."""

    def __init__(self, path: Path, reader: TensorReader, base: TensorReader):
        self.path = path
        self.reader = reader
        if self.reader.metadata.get("format") == LORA_ADAPTER_FORMAT:
            raise UserError(f"{path} is a LoRA adapter: merge the weights of a dense or LoTA run")
        self.sparse = is_sparse_delta(self.reader)
        if self.sparse:
            shapes = {name: torch.Size(shape) for name, shape in sparse_delta_shapes(self.reader).items()}
        else:
            self.reader.require_format(WEIGHTS_FORMAT, path, "run's weights file (dense or sparse delta)")
            shapes = {name: self.reader.layout(name)[1] for name in self.reader.names()}
        for name, shape in shapes.items():
            if name not in base:
                raise UserError(f"run weights {path} have {name}, which the base model does not have")
            if base.layout(name)[1] != shape:
                expected = list(base.layout(name)[1])
                raise UserError(f"run weights {path}: {name} has shape {list(shape)}, the base's is {expected}")
        self.shapes = shapes

    def entries(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """A sparse delta's (indices, values) of one tensor, checked to fit it."""
        indices, values = read_sparse_entries(self.reader, name)
        check_entries(indices, values, self.shapes[name].numel(), self.path, name)
        return indices, values

    def delta(self, name: str, original: torch.Tensor) -> torch.Tensor:
        """The run's float32 delta of a base tensor (zeros where the run did not change it)."""
        if name not in self.shapes:
            return torch.zeros(original.shape)
        if self.sparse:
            indices, values = self.entries(name)
            delta = torch.zeros(original.numel()).index_add_(0, indices, values).view(original.shape)
        else:
            delta = self.reader.get(name).float() - original.float()
        if not torch.isfinite(delta).all():
            raise UserError(f"run weights {self.path}: {name} has non-finite entries")
        return delta


def open_runs(paths: Sequence[Path], base: TensorReader, stack: contextlib.ExitStack) -> list[RunDelta]:
    """Each run's weights file, opened and checked against the base, closed with `stack`."""
    runs = []
    for path in paths:
        existing_file(path, "run weights")
        runs.append(RunDelta(path, stack.enter_context(TensorReader([path])), base))
    return runs
