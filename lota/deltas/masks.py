"""Masks: which entries of a model's weights train, how they are chosen, and their file format.

A mask covers the weights in its scope (by default, "auto", the attention and MLP projections,
whatever the architecture calls them: see lota.core.scope) and marks each entry trainable or frozen.
Sparsity s is the fraction FROZEN. Under the exact rule (the default), with the global threshold
(the paper's), exactly round((1 - s) * N) of the N covered entries are trainable; per tensor,
each tensor keeps round((1 - s) * n_t) of its own n_t. Ties at the threshold go to the earliest
entries in a fixed order (tensors by name, entries in row-major order), so a mask is reproducible.

The official rule (rule "official", the official LoTA code's) floors the count, k = int((1 - s) * n)
of a threshold group's n entries, and trains every entry whose score is at least the k-th largest:
ties at that threshold (zeros too, when it is 0) all train, so a mask may exceed k.

The mask file is safetensors: per covered tensor a uint8 vector of bits packed 8 per byte,
most significant bit first (numpy.packbits order), and metadata with the sparsity, scope,
granularity, rule, counts, each tensor's shape, and the masks it excludes.

For a later task in a sequence (LoTTO), the earlier tasks' masks are excluded: their trainable
entries are never chosen, so every task's sparse delta is disjoint from the others. Either rule
still counts all covered entries and chooses among the free ones.

The extract_mask stage writes masks; train, fisher, merge, continual and bench read or select them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch

from lota.core.cli import existing_file
from lota.core.errors import UserError
from lota.core.io import MASK_FORMAT, TensorReader, save_tensors
from lota.pipeline.names import MASK_RULES

_BIT_WEIGHTS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)


def trainable_count(sparsity: float, total: int, rule: str = "exact") -> int:
    """The count a rule sets among `total` entries: round((1 - s) * total), or (official) the
    official code's int() of the same float product, which its threshold's ties may exceed."""
    share = (1.0 - sparsity) * total
    return int(share) if rule == "official" else round(share)


def top_k_mask(scores: torch.Tensor, k: int, threshold: float | None = None) -> torch.Tensor:
    """Boolean mask of the k largest entries of a 1-D tensor; ties go to the lowest indices.

    `threshold`, the k-th largest value, when the caller has it (found without kthvalue's
    sorted copy and int64 indices)."""
    n = scores.numel()
    if not 0 <= k <= n:
        raise ValueError(f"k={k} outside [0, {n}]")
    if k in (0, n):
        return torch.full((n,), k == n, dtype=torch.bool)
    if threshold is None:
        threshold = scores.kthvalue(n - k + 1).values
    keep = scores > threshold
    missing = k - int(keep.sum())
    tied = (scores == threshold).nonzero().squeeze(1)[:missing]
    keep[tied] = True
    return keep


def select_mask(
    deltas: Mapping[str, torch.Tensor],
    sparsity: float,
    granularity: str,
    excluded: Mapping[str, torch.Tensor] | None = None,
    rule: str = "exact",
) -> dict[str, torch.Tensor]:
    """Boolean masks (shaped like each delta) of the largest-|delta| entries at `sparsity`.

    `rule`: exactly round((1 - s) * N) entries, or (official) every entry scoring at least the
    int((1 - s) * N)-th largest score, ties included.
    `excluded` (LoTTO, for a later task in a sequence): entries earlier masks made trainable,
    which this mask never takes, so the tasks' sparse deltas stay disjoint. The count is still
    that of all N covered entries; the entries (and the official rule's threshold) come from the
    free ones.
    """
    if rule not in MASK_RULES:
        raise UserError(f"mask rule must be one of {', '.join(MASK_RULES)}, got {rule!r}")
    excluded = excluded or {}
    names = sorted(deltas)
    scores = {name: _free_scores(deltas[name], excluded.get(name)) for name in names}
    if granularity == "per_tensor":
        return {
            name: _top_free(scores[name].flatten(), sparsity, rule, name).view(deltas[name].shape) for name in names
        }
    if granularity != "global":
        raise UserError(f"mask granularity must be 'global' or 'per_tensor', got {granularity!r}")
    flat = torch.cat([scores[name].flatten() for name in names])
    keep = _top_free(flat, sparsity, rule, "the covered tensors")
    masks, offset = {}, 0
    for name in names:
        size = deltas[name].numel()
        masks[name] = keep[offset : offset + size].view(deltas[name].shape)
        offset += size
    return masks


def _free_scores(delta: torch.Tensor, excluded: torch.Tensor | None) -> torch.Tensor:
    """|delta|, with -inf where an earlier mask already trains the entry."""
    return delta.abs() if excluded is None else delta.abs().masked_fill(excluded, -math.inf)


def _top_free(scores: torch.Tensor, sparsity: float, rule: str, where: str) -> torch.Tensor:
    """The trainable entries of one threshold group's 1-D scores (-inf where excluded) under `rule`."""
    k = trainable_count(sparsity, scores.numel(), rule)
    free = int(torch.isfinite(scores).sum())
    if k > free:
        raise UserError(f"{where}: the sparsity needs {k} trainable entries but earlier masks leave only {free} free")
    if rule == "exact":
        return top_k_mask(scores, k)
    if k == 0:
        return torch.zeros(scores.numel(), dtype=torch.bool)
    # With k <= free, the k-th largest score is the k-th largest free one: finite, so no -inf reaches it.
    return scores >= scores.kthvalue(scores.numel() - k + 1).values


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """A boolean tensor as uint8 bytes, 8 entries per byte, most significant bit first."""
    flat = mask.flatten().to(torch.uint8)
    flat = torch.cat([flat, flat.new_zeros((-flat.numel()) % 8)])
    return (flat.view(-1, 8) * _BIT_WEIGHTS).sum(dim=1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, shape: Iterable[int]) -> torch.Tensor:
    shape = torch.Size(shape)
    bits = packed.view(-1, 1).bitwise_and(_BIT_WEIGHTS).ne(0).flatten()
    return bits[: shape.numel()].view(shape)


def save_mask(path: Path, masks: Mapping[str, torch.Tensor], info: Mapping[str, object]) -> None:
    trainable = sum(int(m.sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    metadata = {
        "format": MASK_FORMAT,
        "trainable": str(trainable),
        "total": str(total),
        "shapes": json.dumps({name: list(m.shape) for name, m in masks.items()}),
        **{key: json.dumps(value) for key, value in info.items()},
    }
    save_tensors(path, {name: pack_bits(m) for name, m in masks.items()}, metadata)


def load_mask(
    path: Path, expected_shapes: Mapping[str, torch.Size] | None = None, against: str = "the model"
) -> dict[str, torch.Tensor]:
    """Boolean masks from a mask file, checked against `expected_shapes` (those of `against`) when given."""
    existing_file(path, "mask file")
    with TensorReader([path]) as reader:
        reader.require_format(MASK_FORMAT, path, "LoTA mask file")
        try:
            shapes = json.loads(reader.metadata["shapes"])
            masks = {name: unpack_bits(reader.get(name), shapes[name]) for name in reader.names()}
        except (KeyError, ValueError, RuntimeError) as error:
            raise UserError(f"mask {path} is malformed: {error}") from None
    if expected_shapes is not None:
        for name, mask in masks.items():
            if name not in expected_shapes:
                raise UserError(f"mask {path} covers {name}, which {against} does not have")
            if mask.shape != expected_shapes[name]:
                raise UserError(
                    f"mask {path}: {name} has shape {tuple(mask.shape)}, {against}'s is {tuple(expected_shapes[name])}"
                )
    return masks


def load_masks_alike(paths: Sequence[Path]) -> list[dict[str, torch.Tensor]]:
    """Masks that must cover the same tensors with the same shapes, each checked against the first."""
    first = load_mask(paths[0])
    shapes = {name: mask.shape for name, mask in first.items()}
    masks = [first]
    for path in paths[1:]:
        mask = load_mask(path, shapes, against=str(paths[0]))
        if set(mask) != set(first):
            missing = sorted(set(first) ^ set(mask))[0]
            raise UserError(f"masks {paths[0]} and {path} do not cover the same tensors ({missing})")
        masks.append(mask)
    return masks


def mask_union(masks: Iterable[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Per tensor, the entries any of the masks makes trainable."""
    union: dict[str, torch.Tensor] = {}
    for mask in masks:
        for name, entries in mask.items():
            union[name] = union[name] | entries if name in union else entries
    return union


def excluded_entries(
    paths: Iterable[Path], deltas: Mapping[str, torch.Tensor], against: str = "the task vector in scope"
) -> dict[str, torch.Tensor]:
    """The union of the given masks' trainable entries, per covered tensor, checked against the deltas."""
    shapes = {name: delta.shape for name, delta in deltas.items()}
    return mask_union(load_mask(path, shapes, against=against) for path in paths)
