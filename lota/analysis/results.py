"""Reading results files for the report: each checked to hold its kind's keys, grouped per task,
sequence or merged task set, and ordered (method, sparsity, LoRA rank, mask strategy, lambda, seed);
the labels a result goes by (its shape, its masked variant)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lota.analysis.comparison import holds_items
from lota.core.errors import UserError
from lota.core.io import read_json
from lota.pipeline.names import (
    DEFAULT_STRATEGY,
    DISJOINT_METHODS,
    MASK_STRATEGIES,
    MERGE_METHODS,
    RUN_METHODS,
    split_seed,
)

# Single-task methods, then the task sequences' own, then the merges'.
METHOD_ORDER = {method: order for order, method in enumerate((*RUN_METHODS, *DISJOINT_METHODS, *MERGE_METHODS))}
MASKED_LABELS = {"lota": "LoTA", "rosa": "RoSA"}  # the methods that train through a mask
SEQUENCE_REQUIRED = ("run", "method", "tasks", "stages", "forgetting")
REQUIRED = ("run", "task", "method", "accuracy", "ci95", "n")
MERGE_REQUIRED = ("run", "method", "tasks", "accuracy", "mean_accuracy", "single_task", "base")
LMEVAL_REQUIRED = ("model", "harness_version", "backend", "tasks")
ALPACA_EVAL_REQUIRED = ("model", "judge", "win_rate", "standard_error", "n_total")


def load_checked(paths: list[Path], required: tuple[str, ...], what: str) -> list[dict[str, Any]]:
    """The results files in order, each checked to hold the `required` keys of a `what`."""
    results = []
    for path in paths:
        result = read_json(path, "results file")
        missing = [key for key in required if key not in result]
        if missing:
            raise UserError(f"{path} is not a {what}: it lacks {missing[0]!r}")
        results.append(result)
    return results


def load_grouped(
    paths: list[Path], required: tuple[str, ...], what: str, group: Any
) -> dict[Any, list[dict[str, Any]]]:
    """Results grouped by `group(result)`, each group ordered by method, then sparsity and rank."""
    grouped: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for result in load_checked(paths, required, what):
        grouped[group(result)].append(result)
    for results in grouped.values():
        results.sort(key=sort_key)
    return dict(sorted(grouped.items()))


def sort_key(result: dict[str, Any]) -> tuple:
    """Methods in a fixed order, then by sparsity, LoRA rank, mask strategy, a merge's lambda and the
    name's seed (the base seed's first)."""
    method = METHOD_ORDER.get(result["method"], 99)
    strategy = strategy_key(mask_strategy(result) or "")
    scale = (result.get("settings") or {}).get("scale") or 0
    seed = split_seed(result["run"])[1]
    named_seed = -1 if seed is None else seed
    return method, result.get("sparsity") or 0, result.get("lora_rank") or 0, strategy, scale, named_seed


def mask_strategy(result: dict[str, Any]) -> str | None:
    """The strategy that ranked a LoTA or RoSA run's mask (the method's default where the result names
    none); None for the other methods."""
    if result["method"] not in DEFAULT_STRATEGY:
        return None
    return result.get("mask_strategy") or DEFAULT_STRATEGY[result["method"]]


def strategy_key(strategy: str) -> tuple[int, str]:
    """Strategies in the vocabulary's order; unknown ones (and none) after them, by name."""
    known = MASK_STRATEGIES.index(strategy) if strategy in MASK_STRATEGIES else len(MASK_STRATEGIES)
    return known, strategy


def strategy_suffix(method: str, strategy: str | None, name_default: bool = False) -> str:
    """The strategy as a label shows it: '' for none, and for the method's default unless `name_default`."""
    if strategy is None or (strategy == DEFAULT_STRATEGY[method] and not name_default):
        return ""
    return strategy


def variant_label(method: str, strategy: str, name_default: bool = False) -> str:
    """A masked method with its strategy, e.g. 'LoTA random', or 'LoTA' for its default."""
    return f"{MASKED_LABELS[method]} {strategy_suffix(method, strategy, name_default)}".strip()


def load_results(paths: list[Path]) -> dict[str, list[dict[str, Any]]]:
    """Sweep results grouped by task, each group ordered base, FFT, LoRA, LoTA (by sparsity, then mask
    strategy), then RoSA."""
    return load_grouped(paths, REQUIRED, "results file", lambda result: result["task"])


def load_sequences(paths: list[Path]) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    """Task-sequence results grouped by their tasks in order."""
    return load_grouped(paths, SEQUENCE_REQUIRED, "task-sequence results file", lambda result: tuple(result["tasks"]))


def load_merges(paths: list[Path]) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    """Merge results grouped by the tasks they merge."""
    return load_grouped(paths, MERGE_REQUIRED, "merge results file", lambda result: tuple(result["tasks"]))


def masked_variants(results: list[dict[str, Any]]) -> dict[tuple[str, str], dict[float, list[dict[str, Any]]]]:
    """LoTA's and RoSA's runs by (method, mask strategy), in method then strategy order, each a
    {sparsity: its seeds' runs} in ascending sparsity."""
    variants: dict[tuple[str, str], dict[float, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for result in sorted(results, key=sort_key):
        strategy = mask_strategy(result)
        if strategy and result.get("sparsity") is not None:
            variants[result["method"], strategy][result["sparsity"]].append(result)
    ordered = sorted(variants.items(), key=lambda item: (METHOD_ORDER[item[0][0]], strategy_key(item[0][1])))
    return {variant: dict(runs) for variant, runs in ordered}


def stems(results: list[dict[str, Any]]) -> set[str]:
    return {split_seed(result["run"])[0] for result in results}


def with_items(*groups: Mapping[Any, list[dict[str, Any]]]) -> list[dict[Any, list[dict[str, Any]]]]:
    """Each grouping with only the groups whose results all hold their items' verdicts."""
    return [{key: results for key, results in group.items() if all(map(holds_items, results))} for group in groups]


def shape(result: dict[str, Any]) -> str:
    """Sparsity, LoRA rank and a mask strategy other than the method's default, e.g. 's = 90%, random'."""
    parts = [f"s = {100 * result['sparsity']:g}%"] if result.get("sparsity") is not None else []
    parts += [f"r = {result['lora_rank']}"] if result.get("lora_rank") is not None else []
    suffix = strategy_suffix(result["method"], mask_strategy(result))
    return ", ".join(parts + [suffix] if suffix else parts)
