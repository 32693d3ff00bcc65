"""A learning rate chosen on the validation split: the rule that picks it among the candidate
rates' validation results, and the file (results/lr/<run>.json) that records the choice and that
the run's training reads (lota.train --lr-from)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lota.core.errors import UserError
from lota.core.io import read_json

RULE = "the highest validation accuracy; a tie goes to the rate listed first"


def choose_rate(run: str, candidates: list[tuple[float, dict[str, Any]]]) -> dict[str, Any]:
    """The choice among (rate, validation result) pairs, in the config's order, as the record
    results/lr/<run>.json holds: the rate, the rule, and every candidate's accuracy."""
    if not candidates:
        raise UserError(f"no candidate rates to choose the learning rate of {run} from")
    table = [
        {"lr": rate, "accuracy": result["accuracy"], "correct": result["correct"], "n": result["n"]}
        for rate, result in candidates
    ]
    best = max(table, key=lambda row: row["accuracy"])  # max keeps the first of equals
    return {"run": run, "lr": best["lr"], "split": "validation", "rule": RULE, "candidates": table}


def read_chosen_rate(path: Path) -> float:
    """The rate a choice file records, checked to be one."""
    choice = read_json(path, "learning-rate choice")
    rate = choice.get("lr") if isinstance(choice, dict) else None
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= 1:
        raise UserError(f"learning-rate choice {path}: 'lr' must be a rate in (0, 1], got {rate!r}")
    return float(rate)
