"""Forgetting over a task sequence (the continual stage, lota.continual): forgetting of a task is its
accuracy right after the stage that trained it minus its accuracy after the last stage (positive:
forgotten). Both accuracies come from the same test items, so its 95% interval is the paired one of
Agresti and Min (2005): a Wald interval on the items that flipped, with half an item added to each
cell. For a combined task the subtasks' differences are averaged and their variances added. Also
the entries every two stages' masks both make trainable (zero for LoTTO's disjoint masks)."""

from __future__ import annotations

import math
from itertools import combinations
from pathlib import Path
from typing import Any

import torch

from lota.core.errors import UserError
from lota.deltas.masks import load_masks_alike
from lota.evaluation.scoring import Z95

Samples = list[dict[str, Any]]
Flips = tuple[int, int, int]  # items right before and wrong after, wrong before and right after, all items


def flips(before: list[bool], after: list[bool]) -> Flips:
    lost = sum(b and not a for b, a in zip(before, after, strict=True))
    gained = sum(a and not b for b, a in zip(before, after, strict=True))
    return lost, gained, len(before)


def mean_difference(parts: list[Flips], z: float = Z95) -> dict[str, Any]:
    """Accuracy before minus after, averaged over parts (subtasks) evaluated on the same items
    twice, with the Agresti-Min 95% interval: each part's difference with half an item added
    to every cell of its 2x2 table, their variances added."""
    difference = sum((lost - gained) / n for lost, gained, n in parts) / len(parts)
    centre = sum((lost - gained) / (n + 2) for lost, gained, n in parts) / len(parts)
    variance = 0.0
    for lost, gained, n in parts:
        b, c, total = lost + 0.5, gained + 0.5, n + 2
        variance += ((b + c) - (b - c) ** 2 / total) / total**2
    half = z * math.sqrt(variance) / len(parts)
    return {
        "difference": difference,
        "lost": sum(part[0] for part in parts),
        "gained": sum(part[1] for part in parts),
        "n": sum(part[2] for part in parts),
        "ci95": [max(-1.0, centre - half), min(1.0, centre + half)],
    }


def forgetting(samples: Samples, before: list[bool], after: list[bool], subtasks: tuple[str, ...]) -> dict[str, Any]:
    """How much accuracy dropped between two evaluations of the same samples' items; for a
    combined task the mean over its subtasks, each subtask's figures beside it."""
    groups: dict[str, tuple[list[bool], list[bool]]] = {}
    for sample, right_before, right_after in zip(samples, before, after, strict=True):
        group = groups.setdefault(str(sample.get("subtask", "")) if subtasks else "", ([], []))
        group[0].append(right_before)
        group[1].append(right_after)
    parts = {name: flips(*group) for name, group in groups.items()}
    result = mean_difference(list(parts.values()))
    if subtasks:
        result["subtasks"] = {name: mean_difference([part]) for name, part in parts.items()}
    return result


def check_same_items(first: Samples, second: Samples, first_path: Path, second_path: Path) -> None:
    """Paired figures need both evaluations on the same test items in the same order."""
    golds = [(s.get("gold"), s.get("subtask")) for s in first]
    if golds != [(s.get("gold"), s.get("subtask")) for s in second]:
        raise UserError(f"{first_path} and {second_path} are not samples of the same test items")


def mask_overlaps(paths: list[Path]) -> dict[str, int]:
    """Entries made trainable by both masks, for every two stages ('1-2': count)."""
    masks = load_masks_alike(paths)
    return {
        f"{i}-{j}": sum(int(torch.logical_and(mask, second[name]).sum()) for name, mask in first.items())
        for (i, first), (j, second) in combinations(enumerate(masks, start=1), 2)
    }
