"""Comparisons of methods over seeds: the tables the report shows beside each run's own figures.

Results come in replicates: a run, sequence or merge name may end in _seed<N>, and the name
without it (its stem, lota.pipeline.names.split_seed) is the method the replicates share. Each result's
config["seed"] is the seed it ran with. From lists of result dicts this module builds:

- methods: a group's results by stem, each stem's results in seed order (group_methods);
- per method: a figure's mean and standard deviation over seeds (summarize) and the whole cost,
  every job's wall time summed per result and averaged over seeds (whole_cost);
- pairs: the mean item difference A - B with its bootstrap interval, on the seeds both ran and
  the items every one of those replicates scored (each item averaged over the seeds), an exact
  McNemar p per shared seed where the items are 0/1 verdicts, Holm's adjustment over every
  (pair, seed) p-value of one table, and the minimum detectable difference (compare_pairs, over
  item_difference, which lota.analysis.claims shares);
- the items a pair reads: a single-task run's verdicts, a merge's pooled over its tasks (keyed
  task/id), or a sequence's per-item forgetting of one task;
- mask stability: the Jaccard index and per-tensor agreement of masks of the same task,
  sparsity and strategy from different seeds (mask_stability), and the Jaccard index of different
  seeds' masks of a sequence's last stage (sequence_mask_stability).

The statistics are lota.analysis.stats'; this module picks the items and seeds they are given.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from lota.analysis import stats
from lota.core.errors import UserError
from lota.deltas.masks import load_masks_alike
from lota.pipeline.names import (
    DEFAULT_STRATEGY,
    MASK_NAME_GRAMMAR,
    MASK_STRATEGIES,
    names_rank,
    percent_to_sparsity,
    split_seed,
)

Result = dict[str, Any]
ItemsOf = Callable[[Result], Mapping[str, float]]  # a result's score per test item, by item id
Pair = tuple[str, str]  # the stems of methods A and B, compared as A - B


def replicate_seed(result: Result) -> int:
    """The seed a result ran with: its config's."""
    seed = (result.get("config") or {}).get("seed")
    if not isinstance(seed, int):
        raise UserError(f"result {result['run']}: its config gives no 'seed', so its replicate is unknown")
    return seed


@dataclass(frozen=True)
class Method:
    """A method's replicates: its name stem and its results, one per seed, in seed order."""

    stem: str
    seeds: tuple[int, ...]
    results: tuple[Result, ...]

    def result(self, seed: int) -> Result:
        return self.results[self.seeds.index(seed)]


def group_by_stem(results: Iterable[Result]) -> dict[str, list[Result]]:
    """Results by their name's stem, in the order the stems first appear, each stem's in the given order."""
    by_stem: dict[str, list[Result]] = defaultdict(list)
    for result in results:
        by_stem[split_seed(result["run"])[0]].append(result)
    return dict(by_stem)


def group_methods(results: Iterable[Result]) -> dict[str, Method]:
    """Results grouped into methods by stem, in the order the stems first appear, each in seed order."""
    methods = {}
    for stem, replicates in group_by_stem(results).items():
        seeds: dict[int, Result] = {}
        for result in replicates:
            seed = replicate_seed(result)
            if seed in seeds:
                raise UserError(f"results {seeds[seed]['run']} and {result['run']} are both seed {seed} of {stem}")
            seeds[seed] = result
        methods[stem] = Method(stem, tuple(sorted(seeds)), tuple(seeds[seed] for seed in sorted(seeds)))
    return methods


def summarize(method: Method, figure: Callable[[Result], float | None]) -> stats.Summary | None:
    """A figure's summary over the method's seeds that have it (None where none has)."""
    values = [value for value in map(figure, method.results) if value is not None]
    return stats.summary(values) if values else None


@dataclass(frozen=True)
class Cost:
    """Wall seconds of every job behind a result, summed, and the largest peak memory among them
    (None where no job measured it); for a method, each averaged over its seeds."""

    wall_s: float
    max_rss_mb: float | None


def result_cost(jobs: Mapping[str, Mapping[str, float | None]]) -> Cost:
    """The cost of one result's jobs ({job: {wall_s, max_rss_mb}})."""
    peaks = [job["max_rss_mb"] for job in jobs.values() if job.get("max_rss_mb") is not None]
    return Cost(sum(job["wall_s"] for job in jobs.values()), max(peaks) if peaks else None)


def whole_cost(method: Method, jobs_key: str = "stages") -> Cost:
    """The mean over seeds of each result's cost; `jobs_key` names its jobs (a sequence's training_jobs)."""
    costs = [result_cost(result.get(jobs_key) or {}) for result in method.results]
    peaks = [cost.max_rss_mb for cost in costs if cost.max_rss_mb is not None]
    return Cost(float(np.mean([cost.wall_s for cost in costs])), float(np.mean(peaks)) if peaks else None)


def retained_share(result: Result) -> float | None:
    """A merge's mean over tasks of its accuracy over the single-task run's (tasks without one left out)."""
    kept = [value for value in (result.get("retained") or {}).values() if value is not None]
    return sum(kept) / len(kept) if kept else None


# --- the items pairs read ------------------------------------------------------------------


def run_items(result: Result) -> Mapping[str, float]:
    """A single-task result's verdict per item."""
    return result["items"]


def merge_items(result: Result) -> dict[str, float]:
    """A merge's verdicts on every task's items, pooled and keyed <task>/<id>."""
    return {
        f"{task}/{item}": verdict for task in result["tasks"] for item, verdict in stage_items(result, task).items()
    }


def stage_items(accuracies: Result, task: str) -> Mapping[str, float]:
    """The verdicts on `task` of a merge, or of one stage of a sequence (their 'accuracy' per task)."""
    return accuracies["accuracy"][task]["items"]


def forgetting_items(task: str) -> ItemsOf:
    """Per item of an earlier task of a sequence: its verdict after the task's own stage less after the last
    stage (1 forgotten, -1 learnt later, 0 kept), on the items both stages scored."""

    def forgetting(result: Result) -> dict[str, float]:
        own = stage_items(result["stages"][result["tasks"].index(task) + 1], task)
        last = stage_items(result["stages"][-1], task)
        return {item: own[item] - last[item] for item in own if item in last}

    return forgetting


def holds_items(result: Result) -> bool:
    """Whether a result holds its items' verdicts (results of lota before issue 24 do not): a run's, every
    task's of a merge, every stage's of a sequence."""
    if "stages" in result and isinstance(result["stages"], list):
        return all("items" in part for stage in result["stages"] for part in stage["accuracy"].values())
    if isinstance(result["accuracy"], dict):
        return all("items" in part for part in result["accuracy"].values())
    return "items" in result


# --- pairs ---------------------------------------------------------------------------------


def parse_pair(text: str) -> Pair:
    """'A:B' as (A, B): two different name stems (names without _seed<N>)."""
    a, separator, b = text.partition(":")
    if not (separator and a and b) or ":" in b or a == b or any(split_seed(stem)[1] is not None for stem in (a, b)):
        raise UserError(f"pair {text!r} is not A:B of two different name stems without _seed<N>, e.g. lota_x_s90:fft_x")
    return a, b


def place_pairs(pairs: Iterable[Pair], stems: Mapping[Hashable, Iterable[str]]) -> dict[Hashable, list[Pair]]:
    """Each pair under the group (a task, a task sequence, a merged task set) whose results hold both
    its stems; a pair no group holds is refused."""
    stem_sets = {group: set(names) for group, names in stems.items()}
    placed: dict[Hashable, list[Pair]] = defaultdict(list)
    for a, b in pairs:
        group = next((group for group, names in stem_sets.items() if a in names and b in names), None)
        if group is None:
            raise UserError(f"pair {a}:{b}: no task, task sequence or merged task set has results of both")
        placed[group].append((a, b))
    return dict(placed)


def sweep_pairs(methods: Mapping[str, Method]) -> list[Pair]:
    """A task's standard pairs: each LoTA variant (sparsity and strategy) against FFT and against LoRA,
    and each RoSA variant against LoRA; LoRA is the configured rank's (no _r<rank> in its name)."""
    by_method: dict[str, list[str]] = defaultdict(list)
    for stem, method in methods.items():
        if not names_rank(stem):
            by_method[method.results[0]["method"]].append(stem)
    pairs = []
    for masked, baselines in (("lota", ("fft", "lora")), ("rosa", ("lora",))):
        pairs += [(a, b) for a in by_method[masked] for baseline in baselines for b in by_method[baseline]]
    return pairs


def every_pair(methods: Mapping[str, Method]) -> list[Pair]:
    """Every two methods, the later one (in the given order) as A."""
    return [(a, b) for b, a in itertools.combinations(methods, 2)]


@dataclass(frozen=True)
class PairComparison:
    """Method A against B on the seeds both ran and the items every one of those replicates scored:
    the mean item difference A - B with its interval, the minimum detectable difference, and where
    the items are 0/1 verdicts the exact McNemar p of each seed and its Holm-adjusted value."""

    a: str
    b: str
    seeds: tuple[int, ...]
    items: int
    difference: stats.Difference
    detectable: float
    mcnemar: tuple[float, ...] = ()
    holm: tuple[float, ...] = ()


@dataclass(frozen=True)
class PairTable:
    """The comparisons of a table's pairs, and a note for each pair left out (why)."""

    rows: list[PairComparison]
    skipped: list[str]


def item_tables(a: Method, b: Method, items_of: ItemsOf) -> tuple[tuple[int, ...], np.ndarray, np.ndarray]:
    """The seeds both methods ran, and each method's (items, seeds) table of scores on those seeds, over
    the items every one of those replicates scored (in id order)."""
    seeds = tuple(seed for seed in a.seeds if seed in b.seeds)
    replicates = [items_of(method.result(seed)) for method in (a, b) for seed in seeds]
    shared = sorted(set.intersection(*map(set, replicates))) if replicates else []
    table = np.array([[replicate[item] for replicate in replicates] for item in shared], dtype=float)
    table = table.reshape(len(shared), 2 * len(seeds))
    return seeds, table[:, : len(seeds)], table[:, len(seeds) :]


@dataclass(frozen=True)
class ItemDifference:
    """Method A against B on the seeds both ran and the items every one of those replicates scored:
    each side's (items, seeds) table of scores, the mean item difference A - B with its bootstrap
    interval, and the minimum detectable difference."""

    seeds: tuple[int, ...]
    table_a: np.ndarray
    table_b: np.ndarray
    difference: stats.Difference
    detectable: float


def item_difference(a: Method, b: Method, items_of: ItemsOf) -> ItemDifference | str:
    """A - B on their shared seeds and items, or why there is none to measure."""
    seeds, table_a, table_b = item_tables(a, b, items_of)
    if not seeds or len(table_a) < 2:
        return f"{'no seed' if not seeds else 'fewer than two items'} in common"
    return ItemDifference(
        seeds,
        table_a,
        table_b,
        stats.paired_bootstrap(table_a, table_b),
        stats.minimum_detectable_difference(table_a, table_b),
    )


def compare_pairs(methods: Mapping[str, Method], pairs: Iterable[Pair], items_of: ItemsOf, verdicts: bool) -> PairTable:
    """The pairs' comparisons; `verdicts`: the items are 0/1 verdicts, so each seed gets a McNemar test,
    and Holm's adjustment runs over every (pair, seed) p-value of the table."""
    rows, skipped = [], []
    for a, b in dict.fromkeys(pairs):
        found = item_difference(methods[a], methods[b], items_of)
        if isinstance(found, str):
            skipped.append(f"{a} vs {b}: {found}")
            continue
        columns = range(len(found.seeds)) if verdicts else ()
        mcnemar = tuple(stats.mcnemar_exact(found.table_a[:, k], found.table_b[:, k]) for k in columns)
        rows.append(PairComparison(a, b, found.seeds, len(found.table_a), found.difference, found.detectable, mcnemar))
    adjusted = iter(stats.holm([p for row in rows for p in row.mcnemar]))
    rows = [replace(row, holm=tuple(itertools.islice(adjusted, len(row.mcnemar)))) for row in rows]
    return PairTable(rows, skipped)


# --- mask stability ------------------------------------------------------------------------


@dataclass(frozen=True)
class MaskFile:
    """A single-task mask file <task>[_seed<N>]_s<percent>[_<strategy>].safetensors: seed None is the
    base seed, strategy task_vector where the name gives none."""

    path: Path
    task: str
    percent: str
    strategy: str
    seed: int | None


def parse_mask_file(path: Path) -> MaskFile:
    stem, suffix = Path(path).stem, Path(path).suffix
    match = MASK_NAME_GRAMMAR.fullmatch(stem)
    if suffix != ".safetensors" or not match:
        raise UserError(f"mask file {path}: its name is not <task>[_seed<N>]_s<percent>[_<strategy>].safetensors")
    seed = int(match["seed"]) if match["seed"] else None
    return MaskFile(Path(path), match["task"], match["percent"], match["strategy"] or DEFAULT_STRATEGY["lota"], seed)


@dataclass(frozen=True)
class MaskStability:
    """Two seeds' masks of one task, sparsity and strategy: the Jaccard index of their trainable entries
    and the share of entries on which they agree, averaged over tensors."""

    task: str
    percent: str
    strategy: str
    seeds: tuple[int | None, int | None]
    jaccard: float
    agreement: float


def mask_stability(paths: Iterable[Path]) -> list[MaskStability]:
    """Every two seeds' masks of each (task, sparsity, strategy), by task, sparsity, strategy and seed."""
    variants: dict[tuple[str, str, str], dict[int | None, MaskFile]] = defaultdict(dict)
    for path in paths:
        mask = parse_mask_file(path)
        seeds = variants[mask.task, mask.percent, mask.strategy]
        if mask.seed in seeds:
            raise UserError(f"mask files {seeds[mask.seed].path} and {path} are the same seed's mask")
        seeds[mask.seed] = mask
    rows = []
    for (task, percent, strategy), seeds in sorted(variants.items(), key=variant_key):
        for pair, found in seed_pair_agreements({seed: mask.path for seed, mask in seeds.items()}):
            agreement = float(np.mean(list(found.agreement.values())))
            rows.append(MaskStability(task, percent, strategy, pair, found.jaccard, agreement))
    return rows


def sequence_mask_stability(paths: Iterable[Path]) -> dict[str, list[float]]:
    """Per sequence stem, the Jaccard index of every two seeds' masks of its last stage (mask files
    work/cl/masks/<sequence>[_seed<N>].safetensors)."""
    by_stem: dict[str, dict[int | None, Path]] = defaultdict(dict)
    for path in paths:
        stem, seed = split_seed(Path(path).stem)
        by_stem[stem][seed] = Path(path)
    return {
        stem: [agreement.jaccard for _, agreement in seed_pair_agreements(seeds)]
        for stem, seeds in sorted(by_stem.items())
    }


def seed_pair_agreements(
    paths: Mapping[int | None, Path],
) -> list[tuple[tuple[int | None, int | None], stats.MaskAgreement]]:
    """Every two seeds' masks compared, in seed order (the base seed, None, first)."""
    seeds = sorted(paths, key=lambda seed: -1 if seed is None else seed)
    masks = load_masks_alike([paths[seed] for seed in seeds])
    return [
        ((first, second), stats.mask_agreement(a, b))
        for (first, a), (second, b) in itertools.combinations(zip(seeds, masks, strict=True), 2)
    ]


def variant_key(item: tuple[tuple[str, str, str], Any]) -> tuple[str, float, int]:
    (task, percent, strategy), _ = item
    return task, percent_to_sparsity(percent), MASK_STRATEGIES.index(strategy)


def stability_by_task(paths: list[Path], tasks: Iterable[str]) -> dict[str, list[MaskStability]]:
    """The mask comparisons of each task; masks of a task without results in the sweep or a merge are
    refused."""
    unknown = sorted({parse_mask_file(path).task for path in paths} - set(tasks))
    if unknown:
        raise UserError(f"--masks: task {unknown[0]!r} has masks but no results among --results or --merges")
    by_task: dict[str, list[MaskStability]] = defaultdict(list)
    for row in mask_stability(paths):
        by_task[row.task].append(row)
    return by_task
