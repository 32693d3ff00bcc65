"""The LoTA paper's three claims, answered from one set of results with replicates:

1. target: on its target task LoTA matches or beats full fine-tuning. Per sweep task, each LoTA
   sparsity (task-vector masks) against FFT: accuracy, LoTA - FFT.
2. forgetting: LoTA forgets less than full fine-tuning when a second task is trained. Per task
   sequence, each LoTA method (lota, lotto, lottoflip) against FFT, per earlier task: forgetting,
   FFT's - the LoTA method's.
3. merging: the sparse deltas of two tasks merge better than TIES (or task arithmetic) merges the
   dense ones. Per merged task set, the sparse sum against TIES and task arithmetic at the same
   lambda: mean accuracy over the tasks, every task's items pooled.

Every comparison reads "by how much the claim's side is better", so a positive difference favours
LoTA. Its items are those of lota.analysis.comparison (verdicts, or per-item forgetting), each averaged over
the seeds both sides ran; its p-value is a paired sign-flip permutation test of them, one test per
comparison (McNemar would give one per seed, and does not apply to forgetting), with Holm's
adjustment over every comparison of the set. The verdict reads the adjusted p and the sign: holds,
does not hold, or cannot tell at this scale. A difference the interval cannot tell from zero is not
a match: the interval says how far apart the two could still be.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from lota.analysis import stats
from lota.analysis.comparison import (
    ItemsOf,
    MaskStability,
    Method,
    Result,
    forgetting_items,
    group_methods,
    item_difference,
    merge_items,
    run_items,
    summarize,
)
from lota.pipeline.names import DEFAULT_STRATEGY, MASKED_SEQUENCE_METHODS, MERGE_GRAMMAR

ALPHA = 0.05
CLAIMS = {
    1: "LoTA matches or beats FFT on the target task",
    2: "LoTA forgets less than FFT when a second task is trained",
    3: "LoTA's sparse sum merges better than TIES (or task arithmetic) merges the FFT task vectors",
}


@dataclass(frozen=True)
class ClaimComparison:
    """One comparison of a claim: the claim's side `a` and the baseline `b` (name stems), where (a task,
    a sequence's earlier task, a merged task set), each side's figure over seeds, and how much better
    `a` is on the items both scored, with its interval, permutation p, Holm-adjusted p and the minimum
    detectable difference."""

    claim: int
    where: str
    a: str
    b: str
    figure: str
    a_values: stats.Summary
    b_values: stats.Summary
    seeds: tuple[int, ...]
    items: int
    better_by: stats.Difference
    detectable: float
    p: float
    holm: float = 1.0

    @property
    def verdict(self) -> str:
        if self.holm >= ALPHA:
            return "cannot tell"
        return "holds" if self.better_by.mean > 0 else "does not hold"


def compare(
    claim: int,
    where: str,
    sides: tuple[Method, Method],
    items_of: ItemsOf,
    figure: tuple[str, Callable[[Result], float]],
    higher_is_better: bool = True,
) -> ClaimComparison | None:
    """The claim's side against the baseline on the items every replicate of the seeds both ran
    scored (None where they share no seed or fewer than two items)."""
    better, worse = sides if higher_is_better else sides[::-1]
    found = item_difference(better, worse, items_of)
    if isinstance(found, str):
        return None
    name, read = figure
    a_values, b_values = (summarize(method, read) for method in sides)
    assert a_values is not None and b_values is not None  # every result holds the figure
    return ClaimComparison(
        claim,
        where,
        sides[0].stem,
        sides[1].stem,
        name,
        a_values,
        b_values,
        found.seeds,
        len(found.table_a),
        found.difference,
        found.detectable,
        stats.paired_permutation(found.table_a, found.table_b),
    )


def by_method(methods: Mapping[str, Method], method: str) -> list[Method]:
    return [found for found in methods.values() if found.results[0]["method"] == method]


def target_comparisons(by_task: Mapping[str, list[Result]]) -> list[ClaimComparison | None]:
    """Claim 1: per task, each LoTA sparsity of LoTA's own masks against FFT."""
    rows = []
    for task, results in by_task.items():
        methods = group_methods(results)
        lota = [
            found
            for found in by_method(methods, "lota")
            if (found.results[0].get("mask_strategy") or DEFAULT_STRATEGY["lota"]) == DEFAULT_STRATEGY["lota"]
        ]
        accuracy = ("accuracy", lambda result: result["accuracy"])
        rows += [compare(1, task, (a, b), run_items, accuracy) for a in lota for b in by_method(methods, "fft")]
    return rows


def forgetting_comparisons(by_sequence: Mapping[tuple[str, ...], list[Result]]) -> list[ClaimComparison | None]:
    """Claim 2: per sequence and earlier task, each LoTA method's forgetting against FFT's (less is better)."""
    rows = []
    for tasks, results in by_sequence.items():
        methods = group_methods(results)
        masked = [found for method in MASKED_SEQUENCE_METHODS for found in by_method(methods, method)]
        for task in tasks[:-1]:
            where = f"{' → '.join(tasks)}: {task}"
            forgetting = (f"forgetting {task}", lambda result, task=task: result["forgetting"][task]["difference"])
            rows += [
                compare(2, where, (a, b), forgetting_items(task), forgetting, higher_is_better=False)
                for a in masked
                for b in by_method(methods, "fft")
            ]
    return rows


def merge_scale(method: Method) -> str | None:
    """A merge's _l<lambda> (None: the configured lambda)."""
    match = MERGE_GRAMMAR.fullmatch(method.stem)
    return match["scale"] if match else None


def merging_comparisons(by_merge: Mapping[tuple[str, ...], list[Result]]) -> list[ClaimComparison | None]:
    """Claim 3: per merged task set, the sparse sum against TIES and task arithmetic at the same lambda."""
    rows = []
    for tasks, results in by_merge.items():
        methods = group_methods(results)
        mean = ("mean accuracy", lambda result: result["mean_accuracy"])
        rows += [
            compare(3, " + ".join(tasks), (a, b), merge_items, mean)
            for a in by_method(methods, "lotasum")
            for baseline in ("ties", "ta")
            for b in by_method(methods, baseline)
            if merge_scale(a) == merge_scale(b)
        ]
    return rows


def claim_comparisons(
    by_task: Mapping[str, list[Result]],
    by_sequence: Mapping[tuple[str, ...], list[Result]],
    by_merge: Mapping[tuple[str, ...], list[Result]],
) -> list[ClaimComparison]:
    """Every comparison the results hold, claim by claim, with Holm's adjustment over all of them."""
    found = target_comparisons(by_task) + forgetting_comparisons(by_sequence) + merging_comparisons(by_merge)
    rows = [row for row in found if row is not None]
    return [
        replace(row, holm=adjusted) for row, adjusted in zip(rows, stats.holm([row.p for row in rows]), strict=True)
    ]


def answer(rows: Iterable[ClaimComparison]) -> str:
    """A claim's answer over its comparisons: holds or does not hold where every one says so, else how
    many say what."""
    verdicts = [row.verdict for row in rows]
    if len(set(verdicts)) == 1:
        return verdicts[0]
    counts = {verdict: verdicts.count(verdict) for verdict in ("holds", "does not hold", "cannot tell")}
    return "mixed: " + ", ".join(f"{verdict} in {n}" for verdict, n in counts.items() if n)


def benchmark_wall_time(folder: Path) -> tuple[int, float]:
    """The number of jobs with a benchmark file under `folder` (Snakemake's benchmark: TSV files) and
    their wall seconds summed: the whole set's cost, every job counted once."""
    files = sorted(folder.rglob("*.tsv"))
    seconds = 0.0
    for path in files:
        rows = path.read_text().splitlines()
        seconds += sum(float(row.split("\t")[0]) for row in rows[1:] if row.strip())
    return len(files), seconds


def mask_overlap(rows: Iterable[MaskStability]) -> dict[tuple[str, str], list[float]]:
    """(task, percent) -> the Jaccard index of every two seeds' task-vector masks of that task and sparsity."""
    overlap: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        if row.strategy == DEFAULT_STRATEGY["lota"]:
            overlap.setdefault((row.task, row.percent), []).append(row.jaccard)
    return overlap
