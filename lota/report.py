"""Stage report: a sweep's and task sequences' results as one Markdown report with plots.

Sweep: per task a table whose rows are runs (method, sparsity, rank and mask strategy, accuracy with
its 95% interval, trainable parameters, training wall time and peak memory); where LoTA and RoSA
runs hold several (method, mask strategy) pairs, a table of their accuracy with a row per sparsity
and a column per pair; and a plot of accuracy against sparsity with a line per pair, FFT, LoRA and
the base model as horizontal lines.

Task sequences: per sequence of tasks a forgetting table (methods as rows: each earlier task's
accuracy after its own stage and at the end, the forgetting with its paired interval, the last
task's accuracy before and after), the accuracy matrix of every stage on every task, and a bar
plot of forgetting and final accuracy with the methods side by side.

Merges: per merged task set a table whose rows are the base model, each task's single-task runs
(on their own task) and every merge (method, lambda), with the accuracy on each task, the mean,
the share of the single-task accuracy kept, and the merge's wall time and peak memory.

Comparisons over seeds (lota.analysis.comparison), where the results hold their items' verdicts: a method is a
name without its _seed<N>. Per sweep task, a table of each method's accuracy over seeds (mean ± std and
each seed's value) and whole cost (every job's wall time, the largest peak memory), and one of pairs
(each LoTA variant against FFT and LoRA, RoSA against LoRA, and --pairs): the paired difference over
items with its bootstrap interval, each seed's exact McNemar p, Holm's adjustment over all (pair, seed)
p-values of the table, and the minimum detectable difference; with --masks, the Jaccard index and
per-tensor agreement of each two seeds' masks. Per task sequence, each method's forgetting over seeds
and the paired forgetting difference of every two methods, item by item; per merged task set, each
method's mean accuracy and share kept over seeds and every two methods' paired difference on all tasks'
items. Every plot draws the mean over seeds with a marker at each seed's value.

The paper's claims (lota.analysis.claims), first, where results hold their items' verdicts: LoTA against FFT on
the target task, on forgetting, and the sparse sum against TIES and task arithmetic, each comparison with
both sides over seeds, the paired difference in LoTA's favour, a permutation p with Holm's adjustment over
all of them, the verdict and each claim's answer; the masks' overlap across seeds; and, with
--benchmarks, the whole set's job time.

Harnesses: a table of every lm-evaluation-harness result (model, task, metric with its standard
error, items, shots, backend) and one of every AlpacaEval result (win rate with its standard
error, length-controlled win rate, judge).
"""

from __future__ import annotations

import logging
import math
import os
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only: no display on a cluster node
import matplotlib.pyplot as plt  # noqa: E402

from lota.analysis.claims import CLAIMS, ClaimComparison, answer, benchmark_wall_time, claim_comparisons, mask_overlap  # noqa: E402
from lota.analysis.comparison import (  # noqa: E402
    MaskStability,
    Method,
    Pair,
    PairTable,
    compare_pairs,
    every_pair,
    forgetting_items,
    group_by_stem,
    group_methods,
    holds_items,
    mask_stability,
    merge_items,
    parse_mask_file,
    parse_pair,
    place_pairs,
    retained_share,
    run_items,
    sequence_mask_stability,
    summarize,
    sweep_pairs,
    whole_cost,
)
from lota.analysis.stats import Summary, summary  # noqa: E402
from lota.core.cli import arg, run_main  # noqa: E402
from lota.core.errors import UserError  # noqa: E402
from lota.core.io import atomic_path, read_json  # noqa: E402
from lota.pipeline.names import (  # noqa: E402
    DEFAULT_STRATEGY,
    DISJOINT_METHODS,
    MASK_STRATEGIES,
    MERGE_METHODS,
    RUN_METHODS,
    names_rank,
    split_seed,
)

log = logging.getLogger("lota.report")
# Single-task methods, then the task sequences' own, then the merges'.
METHOD_ORDER = {method: order for order, method in enumerate((*RUN_METHODS, *DISJOINT_METHODS, *MERGE_METHODS))}
MASKED_LABELS = {"lota": "LoTA", "rosa": "RoSA"}  # the methods that train through a mask
STRATEGY_COLOURS = {
    "task_vector": "tab:green",
    "fisher": "tab:purple",
    "gradient_mean": "tab:brown",
    "base_magnitude": "tab:pink",
    "random": "tab:olive",
}
MASKED_FORMATS = {"lota": "o-", "rosa": "s--"}
STRATEGY_NOTE = (
    "At a sparsity every strategy keeps the same number of trainable entries; they differ in what ranks the "
    "entries: task_vector `|finetuned - base|` of the dense calibration run, fisher and gradient_mean the base "
    "model's squared and mean gradients on calibration batches, base_magnitude `|base weight|`, random a seeded "
    "uniform choice. RoSA trains a LoRA adapter and the sparse update together."
)
SEQUENCE_STYLES = {
    "fft": ("FFT", "tab:blue"),
    "lora": ("LoRA", "tab:orange"),
    "lota": ("LoTA", "tab:olive"),
    "lotto": ("LoTTO (disjoint masks)", "tab:green"),
    "lottoflip": ("LoTTO, flipped-mask calibration", "tab:cyan"),
}
SEQUENCE_REQUIRED = ("run", "method", "tasks", "stages", "forgetting")
SWEEP_COMPARISONS_NOTE = (
    "Comparisons over seeds: a method is a run name without its _seed<N>, its seeds the replicates (each "
    "result's config seed). Its accuracy is the mean ± standard deviation over seeds with each seed's value; "
    "whole time sums the wall time of every job behind a result (data, calibration run, mask, training, export, "
    "generation) and peak memory is the largest of those jobs', both averaged over seeds. A pair A − B is "
    "compared on the seeds both ran and the test items all of those replicates scored: the difference is the "
    "mean over items of A's verdict less B's, each first averaged over the seeds, with a 95% percentile "
    "bootstrap interval over items. McNemar p is each seed's exact McNemar test (in the seeds' order) on the "
    "items the two methods answer differently; Holm p adjusts all (pair, seed) p-values of a task's table "
    "together, as one family. MDD, the minimum detectable difference, is the smallest difference those items "
    "would show in a two-sided 5% test with 80% power, at the spread of their item differences."
)
SEQUENCE_COMPARISONS_NOTE = (
    "Comparisons over seeds: a method is a sequence name without its _seed<N>; its forgetting of each earlier "
    "task and its final mean accuracy are the mean ± standard deviation over seeds with each seed's value, and "
    "whole time and peak memory those of its training jobs (calibration runs included), averaged over seeds. "
    "A pair's forgetting difference A − B is taken per item of the task (its verdict after the task's own "
    "stage less after the last stage, averaged over the seeds both ran), with a 95% percentile bootstrap "
    "interval over items and the MDD as in the sweep; every two methods of a sequence are paired."
)
MERGE_COMPARISONS_NOTE = (
    "Comparisons over seeds: a method is a merge name without its _seed<N>; its mean accuracy and the share of "
    "single-task accuracy it keeps are the mean ± standard deviation over seeds with each seed's value, and "
    "whole time and peak memory those of the merge job, averaged over seeds. Every two methods of a task set "
    "are paired on all its tasks' items pooled, with the sweep's difference, McNemar and Holm p (one family "
    "per task set) and MDD."
)
CLAIMS_NOTE = (
    "The LoTA paper's claims, each comparison read in LoTA's favour: A better by is A − B on accuracy, B − A "
    "on forgetting, over the items both scored, each item averaged over the seeds both ran, with a 95% "
    "bootstrap interval; p is a paired sign-flip permutation test of those items, Holm p its adjustment over "
    "every row here; MDD the smallest difference the items would show (5% two-sided, 80% power). holds / "
    "does not hold: Holm p < 0.05 with the difference for / against LoTA; cannot tell: otherwise, the "
    "interval saying how far apart the two could still be."
)
STABILITY_NOTE = (
    "Mask stability: for two seeds' masks of one sparsity and strategy, the Jaccard index of their trainable "
    "entries (trainable in both over trainable in either) and the share of covered entries on which they agree "
    "(both trainable or both frozen), averaged over tensors."
)
LINE_STYLES = {"fft": ("FFT", "tab:blue"), "lora": ("LoRA", "tab:orange"), "base": ("base", "tab:gray")}
REQUIRED = ("run", "task", "method", "accuracy", "ci95", "n")
MERGE_REQUIRED = ("run", "method", "tasks", "accuracy", "mean_accuracy", "single_task", "base")
LMEVAL_REQUIRED = ("model", "harness_version", "backend", "tasks")
ALPACA_EVAL_REQUIRED = ("model", "judge", "win_rate", "standard_error", "n_total")


@dataclass
class ReportArgs:
    out: Path = arg(help="output Markdown report")
    plots: Path = arg(help="folder for the plots, <task>.png and forgetting_<A>-<B>.png (linked from the report)")
    results: list[Path] = arg([], "results/<run>.json files of a sweep")
    sequences: list[Path] = arg([], "results/cl/<sequence>.json files of task sequences")
    merges: list[Path] = arg([], "results/merge/<merge>.json files of merged models")
    lmeval: list[Path] = arg([], "results/lmeval/<model>.json files of lm-evaluation-harness")
    alpaca_eval: list[Path] = arg([], "results/alpaca_eval/<model>.json files of AlpacaEval")
    masks: list[Path] = arg(
        [],
        "single-task mask files of the sweep's and the merges' runs, <task>[_seed<N>]_s<percent>[_<strategy>]"
        ".safetensors, whose seeds' masks are compared (mask stability)",
    )
    sequence_masks: list[Path] = arg(
        [],
        "masks of the sequences' later stages, work/cl/masks/<sequence>[_seed<N>].safetensors (overlap across seeds)",
    )
    pairs: list[str] = arg(
        [], "extra pairs A:B of name stems (names without _seed<N>) to compare, A - B, beside the standard ones"
    )
    benchmarks: Path | None = arg(
        None, "the folder of the jobs' benchmark files, whose wall times the claims section sums (the whole set)"
    )


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


def shape(result: dict[str, Any]) -> str:
    """Sparsity, LoRA rank and a mask strategy other than the method's default, e.g. 's = 90%, random'."""
    parts = [f"s = {100 * result['sparsity']:g}%"] if result.get("sparsity") is not None else []
    parts += [f"r = {result['lora_rank']}"] if result.get("lora_rank") is not None else []
    suffix = strategy_suffix(result["method"], mask_strategy(result))
    return ", ".join(parts + [suffix] if suffix else parts)


def interval(result: dict[str, Any]) -> str:
    low, high = result["ci95"]
    return f"{result['accuracy']:.3f} [{low:.3f}, {high:.3f}]"


def signed_interval(mean: float, low: float, high: float) -> str:
    return f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]"


def spread(found: Summary | None, form: str = ".3f") -> str:
    """Mean ± standard deviation over seeds with each seed's value, e.g. '0.275 ± 0.035 (0.250, 0.300)';
    a single seed's value alone."""
    if found is None:
        return "–"
    if found.std is None:
        return f"{found.mean:{form}}"
    values = ", ".join(f"{value:{form}}" for value in found.values)
    return f"{found.mean:{form}} ± {found.std:{form.lstrip('+')}} ({values})"


def p_value(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else "<0.001"


def seed_label(seed: int | None) -> str:
    return "base" if seed is None else str(seed)


def table_row(cells: Iterable[str]) -> str:
    return f"| {' | '.join(cells)} |"


def count(value: float | None, unit: str = "") -> str:
    if value is None:
        return "–"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {suffix}{unit}"
    return f"{value:.3g} {unit}".rstrip()


def duration(seconds: float | None) -> str:
    return f"{seconds:,.0f} s" if seconds else "–"


def megabytes(value: float | None) -> str:
    return f"{value:,.0f} MB" if value else "–"


def training(result: dict[str, Any], key: str) -> float | None:
    return (result.get("train") or {}).get(key)


def run_table(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| run | method | shape | accuracy [95% CI] | n | trainable params | train time | peak memory |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for result in results:
        seconds = training(result, "train_wall_s")
        memory = training(result, "peak_memory_mb")
        lines.append(
            f"| {result['run']} | {result['method']} | {shape(result)} | {interval(result)} | {result['n']} "
            f"| {count(result.get('trainable_params') or None)} | {duration(seconds)} "
            f"| {megabytes(memory)} |"
        )
    return lines


def subtask_table(results: list[dict[str, Any]]) -> list[str]:
    """Accuracy per subtask of a combined task (e.g. each commonsense dataset), one row per run."""
    names = sorted({name for result in results for name in result.get("subtasks") or {}})
    if not names:
        return []
    lines = ["", f"| run | {' | '.join(names)} | mean |", "|---|" + "---:|" * (len(names) + 1)]
    for result in results:
        parts = result.get("subtasks") or {}
        cells = [f"{parts[name]['accuracy']:.3f}" if name in parts else "–" for name in names]
        lines.append(f"| {result['run']} | {' | '.join(cells)} | {result['accuracy']:.3f} |")
    return lines


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


def accuracy_cell(seeds: list[dict[str, Any]]) -> str:
    """A run's accuracy with its interval, or several seeds' mean ± standard deviation and values."""
    if len(seeds) == 1:
        return interval(seeds[0])
    return spread(summary([result["accuracy"] for result in seeds]))


def strategy_headers(variants: list[tuple[str, str]]) -> list[str]:
    """Column names of the strategy table: LoTA's always name the strategy, RoSA's where it has several."""
    methods = [method for method, _ in variants]
    return [
        variant_label(method, strategy, name_default=method == "lota" or methods.count(method) > 1)
        for method, strategy in variants
    ]


def strategy_table(results: list[dict[str, Any]]) -> list[str]:
    """Accuracy of each (masked method, strategy) per sparsity, where a task has more than one such pair."""
    variants = masked_variants(results)
    if len(variants) < 2:
        return []
    headers = strategy_headers(list(variants))
    sparsities = sorted({sparsity for runs in variants.values() for sparsity in runs})
    lines = ["", "#### Mask strategies", "", f"| sparsity | {' | '.join(headers)} |", "|---:|" + "---:|" * len(headers)]
    for sparsity in sparsities:
        cells = [accuracy_cell(runs[sparsity]) if sparsity in runs else "–" for runs in variants.values()]
        lines.append(f"| {100 * sparsity:g}% | {' | '.join(cells)} |")
    return lines + ["", STRATEGY_NOTE]


def calibration_note(results: list[dict[str, Any]]) -> list[str]:
    """LoTA's cost beyond its own training: the dense calibration run behind its masks (one per seed)."""
    runs = {}
    for result in results:
        calibrate = (result.get("stages") or {}).get("calibrate")
        if result["method"] == "lota" and calibrate:
            run = (result.get("config") or {}).get("train_calibration", {}).get("run", "the dense run")
            runs[run] = calibrate["wall_s"]
    if not runs:
        return []
    if len(runs) == 1:
        (run, wall_s), *_ = runs.items()
        return ["", f"LoTA's masks come from one dense calibration run ({run}), {wall_s:.0f} s."]
    mean = sum(runs.values()) / len(runs)
    return [
        "",
        f"LoTA's masks come from one dense calibration run per seed ({', '.join(runs)}), {mean:.0f} s each on average.",
    ]


def lr_choice_note(results: list[dict[str, Any]]) -> list[str]:
    """The learning rates chosen on the validation split, with every candidate's validation score."""
    choices = {result["lr_choice"]["run"]: result["lr_choice"] for result in results if result.get("lr_choice")}
    if not choices:
        return []
    lines = [
        "",
        "Learning rates chosen on the validation split (the highest accuracy; a tie goes to the rate listed first):",
    ]
    for run, choice in choices.items():
        tried = ", ".join(f"{row['lr']:g} ({row['correct']}/{row['n']})" for row in choice["candidates"])
        lines.append(f"- {run} and its seeds: {choice['lr']:g}, of {tried}")
    return lines


def error_bars(values: list[float], intervals: list[list[float]]) -> list[list[float]]:
    """Matplotlib's yerr (distances below, above) of values with their intervals."""
    below = [value - low for value, (low, _) in zip(values, intervals, strict=True)]
    above = [high - value for value, (_, high) in zip(values, intervals, strict=True)]
    return [below, above]


Point = list[tuple[float, list[float]]]  # a plotted point's seeds: each seed's value with its 95% interval


def accuracy_point(parts: Iterable[dict[str, Any]]) -> Point:
    """The seeds' accuracies (results, or a stage's per-task entries) as a plotted point."""
    return [(part["accuracy"], part["ci95"]) for part in parts]


def mean_points(points: list[Point]) -> tuple[list[float], list[list[float]]]:
    """Each point's mean over its seeds, and its error bars: a single seed's 95% interval; none (nan) for
    several seeds, whose own markers show their spread."""
    means = [float(np.mean([value for value, _ in seeds])) for seeds in points]
    intervals = [seeds[0][1] if len(seeds) == 1 else [math.nan, math.nan] for seeds in points]
    return means, error_bars(means, intervals)


def seed_markers(axes: Any, positions: list[float], points: list[Point], colour: Any) -> None:
    """Every seed's value as a small marker at its point's position."""
    xs = [position for position, seeds in zip(positions, points, strict=True) for _ in seeds]
    ys = [value for seeds in points for value, _ in seeds]
    axes.scatter(xs, ys, s=12, color=colour, edgecolors="black", linewidths=0.4, zorder=3)


def plot_baselines(axes: Any, results: list[dict[str, Any]]) -> None:
    """FFT, LoRA and the base model as horizontal lines at the mean over seeds: with an interval band for a
    single seed, with a dotted line at each seed's value for several."""
    for stem, seeds in group_by_stem(results).items():
        # One line per baseline: LoRA at other ranks (lora_<task>_r<rank>) stays in the table only.
        if seeds[0]["method"] in LINE_STYLES and not names_rank(stem):
            label, colour = LINE_STYLES[seeds[0]["method"]]
            mean = float(np.mean([result["accuracy"] for result in seeds]))
            axes.axhline(mean, color=colour, label=f"{label} ({mean:.3f})")
            if len(seeds) == 1:
                axes.axhspan(*seeds[0]["ci95"], color=colour, alpha=0.12, linewidth=0)
                continue
            for result in seeds:
                axes.axhline(result["accuracy"], color=colour, linestyle=":", linewidth=0.8)


def plot_masked(axes: Any, variants: dict[tuple[str, str], dict[float, list[dict[str, Any]]]]) -> None:
    """A line through the mean over seeds per (masked method, strategy) against the trainable share on a
    log axis, labelled with the frozen share, with a marker at each seed's value."""
    for (method, strategy), runs in variants.items():
        trainable = [100 * (1 - sparsity) for sparsity in runs]
        points = [accuracy_point(seeds) for seeds in runs.values()]
        means, errors = mean_points(points)
        style = {"fmt": MASKED_FORMATS[method], "color": STRATEGY_COLOURS.get(strategy), "capsize": 4}
        line = axes.errorbar(trainable, means, yerr=errors, label=variant_label(method, strategy), **style)
        seed_markers(axes, trainable, points, line.lines[0].get_color())
    sparsities = sorted({sparsity for runs in variants.values() for sparsity in runs})
    if sparsities:
        axes.set_xscale("log")
        axes.set_xticks([100 * (1 - sparsity) for sparsity in sparsities], [f"{100 * s:g}" for s in sparsities])
        axes.minorticks_off()
        axes.invert_xaxis()


def plot_task(task: str, results: list[dict[str, Any]], out: Path) -> None:
    """Accuracy against sparsity: a line of points per LoTA and RoSA mask strategy, FFT/LoRA/base as
    lines with interval bands."""
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    plot_baselines(axes, results)
    plot_masked(axes, masked_variants(results))
    axes.set_xlabel("sparsity of the mask (% of covered weights frozen)")
    axes.set_ylabel("accuracy (mean over seeds, dots: each seed)")
    axes.set_title(f"{task}: accuracy vs sparsity")
    axes.legend(loc="best", fontsize="small")
    figure.tight_layout()
    with atomic_path(out) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    plt.close(figure)


def accuracy_at(result: dict[str, Any], stage: int, task: str) -> float:
    return result["stages"][stage]["accuracy"][task]["accuracy"]


def forgetting_table(results: list[dict[str, Any]], tasks: tuple[str, ...]) -> list[str]:
    """Per method: each earlier task after its own stage and at the end, with the forgetting and
    the items lost and regained; the last task before training and at the end; the final mean;
    the wall time of every training job behind it (calibration runs included)."""
    header, rule = ["run", "shape"], ["---", "---"]
    for task in tasks[:-1]:
        header += [f"{task} after {task}", f"{task} at end", f"forgetting {task} [95% CI]", "lost / regained"]
        rule += ["---:"] * 4
    header += [f"{tasks[-1]} before", f"{tasks[-1]} at end", "mean at end", "training jobs"]
    rule += ["---:"] * 4
    lines = [f"| {' | '.join(header)} |", f"|{'|'.join(rule)}|"]
    last = len(tasks)
    for result in results:
        cells = [result["run"], shape(result)]
        for task in tasks[:-1]:
            drop = result["forgetting"][task]
            cells += [
                f"{drop['after_own_stage']:.3f}",
                f"{drop['after_last_stage']:.3f}",
                signed_interval(drop["difference"], *drop["ci95"]),
                f"{drop['lost']} / {drop['gained']}",
            ]
        cells += [f"{accuracy_at(result, 0, tasks[-1]):.3f}", f"{accuracy_at(result, last, tasks[-1]):.3f}"]
        jobs = result.get("training_jobs") or {}
        cells += [f"{result['final_mean_accuracy']:.3f}", duration(sum(job["wall_s"] for job in jobs.values()))]
        lines.append(f"| {' | '.join(cells)} |")
    return lines


def stage_table(results: list[dict[str, Any]], tasks: tuple[str, ...]) -> list[str]:
    """The accuracy matrix: every method's model after every stage (0: the base) on every task."""
    lines = [
        "",
        f"| run | after stage | trained on | {' | '.join(tasks)} | trainable params | train time |",
        "|---|---:|---|" + "---:|" * (len(tasks) + 2),
    ]
    for result in results:
        for stage in result["stages"]:
            cells = [interval(stage["accuracy"][task]) for task in tasks]
            seconds = (stage.get("train") or {}).get("train_wall_s")
            lines.append(
                f"| {result['run']} | {stage['stage']} | {stage['trained_on'] or 'base'} | {' | '.join(cells)} "
                f"| {count(stage.get('trainable_params') or None)} | {duration(seconds)} |"
            )
    return lines


def overlap_note(results: list[dict[str, Any]]) -> list[str]:
    """How many trainable entries the stages' masks share, per LoTA method."""
    notes = [
        f"{result['run']}: {', '.join(f'stages {pair}: {shared:,}' for pair, shared in result['mask_overlap'].items())}"
        for result in results
        if result.get("mask_overlap")
    ]
    return ["", "Entries made trainable by two stages' masks: " + "; ".join(notes) + "."] if notes else []


def forgetting_plot(tasks: tuple[str, ...]) -> str:
    """The file name of a task sequence's bar plot."""
    return f"forgetting_{'-'.join(tasks)}.png"


def plot_sequence(tasks: tuple[str, ...], results: list[dict[str, Any]], out: Path) -> None:
    """Bars per method at the mean over its seeds, with a marker at each seed's value: each earlier task's
    forgetting (left) and every task's final accuracy (right)."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2), width_ratios=[max(1, len(tasks) - 1), len(tasks)])
    methods = list(group_by_stem(results).values())
    width = 0.8 / len(methods)
    last = len(tasks)
    for number, seeds in enumerate(methods):
        label, colour = SEQUENCE_STYLES.get(seeds[0]["method"], (seeds[0]["method"], None))
        label = f"{label} {shape(seeds[0])}".strip()
        offset = (number - (len(methods) - 1) / 2) * width
        drops = [
            [(result["forgetting"][task]["difference"], result["forgetting"][task]["ci95"]) for result in seeds]
            for task in tasks[:-1]
        ]
        finals = [accuracy_point(result["stages"][last]["accuracy"][task] for result in seeds) for task in tasks]
        for axes, points, extra in ((left, drops, {"label": label}), (right, finals, {})):
            positions = [i + offset for i in range(len(points))]
            means, errors = mean_points(points)
            axes.bar(positions, means, width, yerr=errors, capsize=3, color=colour, **extra)
            seed_markers(axes, positions, points, "white")  # white: seen on the bar's own colour
    left.axhline(0, color="black", linewidth=0.8)
    left.set_xticks(range(last - 1), list(tasks[:-1]))
    left.set_ylabel("forgetting: accuracy after own stage − at end")
    left.set_title("forgetting (dots: each seed)")
    right.set_xticks(range(last), list(tasks))
    right.set_ylabel("accuracy after the last stage")
    right.set_title(f"after {' → '.join(tasks)}")
    figure.legend(loc="lower center", ncol=min(len(methods), 5), fontsize="small")
    figure.tight_layout(rect=(0, 0.1, 1, 1))
    with atomic_path(out) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    plt.close(figure)


def merge_table(results: list[dict[str, Any]], tasks: tuple[str, ...]) -> list[str]:
    """Rows: the base model, each single-task run on its own task, then every merge with its lambda,
    its accuracy on every task, the mean, the share of the single-task accuracy kept, time and memory."""
    header = [
        "model",
        "λ",
        *(f"{task} [95% CI]" for task in tasks),
        "mean",
        "kept of single-task",
        "merge time",
        "peak memory",
    ]
    lines = [f"| {' | '.join(header)} |", "|---|---:|" + "---:|" * (len(tasks) + 4)]

    def reference_row(label: str, accuracy: dict[str, dict[str, Any]]) -> str:
        """A model the merges are compared with: its accuracy on each task and the mean, no merge figures."""
        mean = sum(accuracy[task]["accuracy"] for task in tasks) / len(tasks)
        cells = [interval(accuracy[task]) for task in tasks]
        return f"| {label} | | {' | '.join(cells)} | {mean:.3f} | – | – | – |"

    if results[0]["base"]:
        lines.append(reference_row("base", results[0]["base"]))
    singles = {tuple(result["single_task"][task]["run"] for task in tasks): result["single_task"] for result in results}
    lines += [reference_row(", ".join(runs), single) for runs, single in singles.items()]
    for result in results:
        scale = (result.get("settings") or {}).get("scale")
        kept = retained_share(result)
        merge = result.get("merge") or {}
        cells = [
            result["run"],
            f"{scale:g}" if scale is not None else "–",
            *(interval(result["accuracy"][task]) for task in tasks),
            f"{result['mean_accuracy']:.3f}",
            f"{kept:.0%}" if kept is not None else "–",
            duration(merge.get("wall_s")),
            megabytes(merge.get("peak_rss_mb")),
        ]
        lines.append(f"| {' | '.join(cells)} |")
    return lines


# A column of a method table: its header, a result's figure (None: not measured), the number format.
MethodFigure = tuple[str, Callable[[dict[str, Any]], float | None], str]


def seed_list(seeds: Iterable[int]) -> str:
    return ", ".join(map(str, seeds))


def method_table(methods: Mapping[str, Method], figures: list[MethodFigure], jobs_key: str = "stages") -> list[str]:
    """A row per method (name stem): its seeds, each figure's mean ± standard deviation over seeds with each
    seed's value, and its whole cost (the jobs under `jobs_key`)."""
    header = ["method", "seeds", *(name for name, _, _ in figures), "whole time", "peak memory"]
    lines = [table_row(header), "|---|---|" + "---:|" * (len(figures) + 2)]
    for method in methods.values():
        cost = whole_cost(method, jobs_key)
        cells = [method.stem, seed_list(method.seeds)]
        cells += [spread(summarize(method, figure), form) for _, figure, form in figures]
        lines.append(table_row(cells + [duration(cost.wall_s), megabytes(cost.max_rss_mb)]))
    return lines


def pair_table(table: PairTable, difference: str = "A − B") -> list[str]:
    """A row per pair: its seeds and items, the difference with its interval, where the items are verdicts
    each seed's McNemar p and its Holm-adjusted value, and the MDD; then the pairs left out."""
    tested = any(row.mcnemar for row in table.rows)
    header = ["A", "B", "seeds", "items", f"{difference} [95% CI]", *(("McNemar p", "Holm p") if tested else ()), "MDD"]
    lines = ["", table_row(header), "|---|---|---|" + "---:|" * (len(header) - 3)] if table.rows else []
    for row in table.rows:
        change = row.difference
        cells = [
            row.a,
            row.b,
            seed_list(row.seeds),
            str(row.items),
            signed_interval(change.mean, change.low, change.high),
        ]
        if tested:
            cells += [", ".join(map(p_value, row.mcnemar)), ", ".join(map(p_value, row.holm))]
        lines.append(table_row(cells + [f"{row.detectable:.3f}"]))
    return lines + (["", "Pairs left out: " + "; ".join(table.skipped) + "."] if table.skipped else [])


def comparisons(results: list[dict[str, Any]], build: Callable[[dict[str, Method]], list[str]]) -> list[str]:
    """A group's comparisons over seeds (`build` from its methods) where its results hold their items'
    verdicts; where only some do, a note naming the others."""
    lacking = [result["run"] for result in results if not holds_items(result)]
    if len(lacking) == len(results):
        return []
    lines = ["", "#### Comparisons over seeds", ""]
    if lacking:
        return lines + [f"Not compared: {', '.join(lacking)} hold no items' verdicts (evaluated by an older lota)."]
    return lines + build(group_methods(results))


def sweep_comparisons(results: list[dict[str, Any]], pairs: list[Pair]) -> list[str]:
    """Accuracy and whole cost per method, and the task's pairs: each LoTA variant against FFT and LoRA,
    each RoSA variant against LoRA, then the extra pairs."""

    def build(methods: dict[str, Method]) -> list[str]:
        accuracy: list[MethodFigure] = [("accuracy: mean ± std (each seed)", lambda result: result["accuracy"], ".3f")]
        table = compare_pairs(methods, sweep_pairs(methods) + pairs, run_items, verdicts=True)
        return method_table(methods, accuracy) + pair_table(table)

    return comparisons(results, build)


def sequence_comparisons(results: list[dict[str, Any]], tasks: tuple[str, ...], pairs: list[Pair]) -> list[str]:
    """Forgetting, final mean accuracy and training cost per method, and per earlier task the paired
    forgetting difference of every two methods (then the extra pairs)."""

    def build(methods: dict[str, Method]) -> list[str]:
        figures: list[MethodFigure] = [
            (f"forgetting {task}", lambda result, task=task: result["forgetting"][task]["difference"], "+.3f")
            for task in tasks[:-1]
        ]
        figures.append(("mean at end", lambda result: result["final_mean_accuracy"], ".3f"))
        lines = method_table(methods, figures, jobs_key="training_jobs")
        for task in tasks[:-1]:
            table = compare_pairs(methods, every_pair(methods) + pairs, forgetting_items(task), verdicts=False)
            lines += pair_table(table, f"forgetting {task} A − B")
        return lines

    return comparisons(results, build)


def merge_comparisons(results: list[dict[str, Any]], pairs: list[Pair]) -> list[str]:
    """Mean accuracy, share kept and merge cost per method, and every two methods' paired difference on
    all tasks' items pooled (then the extra pairs)."""

    def build(methods: dict[str, Method]) -> list[str]:
        figures: list[MethodFigure] = [
            ("mean accuracy", lambda result: result["mean_accuracy"], ".3f"),
            ("kept of single-task", retained_share, ".0%"),
        ]
        table = compare_pairs(methods, every_pair(methods) + pairs, merge_items, verdicts=True)
        return method_table(methods, figures) + pair_table(table)

    return comparisons(results, build)


def stability_table(rows: list[MaskStability]) -> list[str]:
    """A row per two seeds' masks of one sparsity and strategy: their Jaccard index and mean agreement."""
    if not rows:
        return []
    header = "| mask | seeds | Jaccard | mean agreement per tensor |"
    lines = ["", "#### Mask stability over seeds", "", header, "|---|---|---:|---:|"]
    for row in rows:
        seeds = " – ".join(map(seed_label, row.seeds))
        cells = [f"s = {row.percent}%, {row.strategy}", seeds, f"{row.jaccard:.3f}", f"{row.agreement:.4f}"]
        lines.append(table_row(cells))
    return lines + ["", STABILITY_NOTE]


def lmeval_table(results: list[dict[str, Any]]) -> list[str]:
    """A row per model, task and metric (with the harness's filter), value with its standard error."""
    lines = ["| model | task | metric | value ± s.e. | items | shots | backend |", "|---|---|---|---:|---:|---:|---|"]
    for result in results:
        for task, figures in result["tasks"].items():
            for metric, value in figures["metrics"].items():
                stderr = f" ± {value['stderr']:.3f}" if value["stderr"] is not None else ""
                cells = [result["model"], task, metric, f"{value['value']:.3f}{stderr}"]
                cells += [f"{figures['n']} of {figures['n_total']}", str(figures["num_fewshot"]), result["backend"]]
                lines.append(f"| {' | '.join(cells)} |")
    return lines


def alpaca_eval_table(results: list[dict[str, Any]]) -> list[str]:
    """A row per model: its win rate against the reference with the standard error, and the judge."""
    header = "| model | judge | win rate ± s.e. | length-controlled | instructions | mean length | reference |"
    lines = [header, "|---|---|---:|---:|---:|---:|---|"]
    for result in results:
        controlled = result.get("length_controlled_winrate")
        judge = result["judge"] + (f" ({result['judge_model']})" if result.get("judge_model") else "")
        cells = [
            result["model"],
            judge,
            f"{result['win_rate']:.1f}% ± {result['standard_error']:.1f}",
            f"{controlled:.1f}%" if controlled is not None else "–",
            f"{result['n_total']:.0f}",
            f"{result.get('avg_length', 0):,.0f} chars",
            str(result.get("reference") or "–"),
        ]
        lines.append(f"| {' | '.join(cells)} |")
    return lines


def compared(groups: Iterable[list[dict[str, Any]]]) -> bool:
    """Whether any result of the groups holds its items' verdicts, so that its section compares methods."""
    return any(holds_items(result) for results in groups for result in results)


def claims_section(
    rows: list[ClaimComparison],
    stability: Mapping[str, list[MaskStability]],
    sequence_overlap: Mapping[str, list[float]],
    whole_set: str,
) -> list[str]:
    """The paper's claims: a row per comparison with each side's figure over seeds, the difference in the
    claim's favour, its p-values, MDD and verdict; each claim's answer; the masks' overlap across seeds;
    and what the whole set of jobs cost."""
    if not rows:
        return []
    header = ["claim", "where", "A (LoTA)", "B", "figure", "A: mean ± std (each seed)", "B: mean ± std (each seed)"]
    header += ["items", "A better by [95% CI]", "p", "Holm p", "MDD", "verdict"]
    lines = [
        "",
        "## The paper's claims",
        "",
        CLAIMS_NOTE,
        "",
        table_row(header),
        "|---:|---|---|---|---|" + "---:|" * 7 + "---|",
    ]
    for row in rows:
        change = row.better_by
        cells = [str(row.claim), row.where, row.a, row.b, row.figure, spread(row.a_values), spread(row.b_values)]
        cells += [str(row.items), signed_interval(change.mean, change.low, change.high), p_value(row.p)]
        lines.append(table_row(cells + [p_value(row.holm), f"{row.detectable:.3f}", row.verdict]))
    lines.append("")
    for claim, text in CLAIMS.items():
        found = [row for row in rows if row.claim == claim]
        lines.append(f"- Claim {claim}, {text}: " + (f"**{answer(found)}**." if found else "not measured here."))
    overlap = mask_overlap(row for rows in stability.values() for row in rows)
    means = [f"{task} s{percent} {np.mean(values):.3f}" for (task, percent), values in sorted(overlap.items())]
    means += [f"{stem}'s last stage {np.mean(values):.3f}" for stem, values in sequence_overlap.items() if values]
    if means:
        lines += [
            "",
            "Masks across seeds (LoTA's, Jaccard index of two seeds' trainable entries, mean over pairs): "
            + "; ".join(means)
            + ".",
        ]
    return lines + (["", whole_set] if whole_set else [])


def render(
    by_task: dict[str, list[dict[str, Any]]],
    by_sequence: dict[tuple[str, ...], list[dict[str, Any]]],
    by_merge: dict[tuple[str, ...], list[dict[str, Any]]],
    plot_folder: str,
    lmeval: list[dict[str, Any]] | None = None,
    alpaca_eval: list[dict[str, Any]] | None = None,
    pairs: Mapping[Hashable, list[Pair]] | None = None,
    stability: Mapping[str, list[MaskStability]] | None = None,
    claims: list[str] | None = None,
) -> str:
    """The report's Markdown; `pairs` are the extra pairs of each group (keyed as place_pairs keys them:
    ('sweep', task), ('sequence', tasks), ('merge', tasks)), `stability` the mask comparisons per task,
    `claims` the claims section (claims_section)."""
    pairs, stability = pairs or {}, stability or {}
    lines = ["# LoTA report", *(claims or [])]
    if by_task:
        lines += ["", "## Sweep", ""]
        lines.append(
            "Accuracy with its 95% Wilson interval (for a combined task: the mean over its subtasks, with a "
            "normal-approximation interval). "
            "Train time and peak memory are those of the run's training loop."
        )
    if compared(by_task.values()):
        lines += ["", SWEEP_COMPARISONS_NOTE]
    for task, results in by_task.items():
        lines += ["", f"### {task}", ""]
        lines += run_table(results) + subtask_table(results) + calibration_note(results) + lr_choice_note(results)
        lines += strategy_table(results)
        lines += ["", f"![{task}: accuracy vs sparsity]({plot_folder}/{task}.png)"]
        lines += sweep_comparisons(results, pairs.get(("sweep", task), [])) + stability_table(stability.get(task, []))
    if by_sequence:
        lines += ["", "## Continual learning", ""]
        lines.append(
            "Each method trains the tasks in order, each stage from the model the stage before left. Forgetting "
            "of a task is its accuracy right after its own stage minus its accuracy after the last stage "
            "(positive: forgotten), with a 95% paired interval (Agresti-Min) over the same test items; "
            "lost / regained counts the items that went from right to wrong and back. Training jobs: the wall "
            "time of every stage's training and, for the LoTA methods, of the calibration run behind each mask."
        )
    if compared(by_sequence.values()):
        lines += ["", SEQUENCE_COMPARISONS_NOTE]
    for tasks, results in by_sequence.items():
        lines += ["", f"### {' → '.join(tasks)}", ""]
        lines += forgetting_table(results, tasks) + stage_table(results, tasks) + overlap_note(results)
        lines += ["", f"![{'-'.join(tasks)}: forgetting]({plot_folder}/{forgetting_plot(tasks)})"]
        lines += sequence_comparisons(results, tasks, pairs.get(("sequence", tasks), []))
    if by_merge:
        lines += ["", "## Merging", ""]
        lines.append(
            "Each merge combines the tasks' single-task runs onto the base model: ta (task arithmetic), ties, "
            "dareties and darelinear merge the FFT runs' task vectors, lotasum adds the LoTA runs' sparse deltas. "
            "The merged model is scored on every task; kept of single-task is the mean over tasks of its accuracy "
            "over the single-task run's. Merge time and peak memory are those of the merge job alone."
        )
    if compared(by_merge.values()):
        lines += ["", MERGE_COMPARISONS_NOTE]
    for tasks, results in by_merge.items():
        lines += ["", f"### {' + '.join(tasks)}", ""]
        lines += merge_table(results, tasks) + merge_comparisons(results, pairs.get(("merge", tasks), []))
    if lmeval:
        lines += ["", "## lm-evaluation-harness", ""]
        lines.append(
            "The harness's own tasks, prompts and metrics (metric,filter as the harness names them) on the local "
            "data, scored on the first `items` of each test set; the standard error is the harness's."
        )
        lines += [""] + lmeval_table(lmeval)
    if alpaca_eval:
        lines += ["", "## AlpacaEval", ""]
        lines.append(
            "The judge compares each output with the reference output for the same instruction; the win rate is "
            "the mean preference for the model's output (a tie counts half), with its standard error. The "
            "length-controlled win rate needs the hub."
        )
        lines += [""] + alpaca_eval_table(alpaca_eval)
    return "\n".join(lines) + "\n"


def stems(results: list[dict[str, Any]]) -> set[str]:
    return {split_seed(result["run"])[0] for result in results}


def with_items(*groups: Mapping[Any, list[dict[str, Any]]]) -> list[dict[Any, list[dict[str, Any]]]]:
    """Each grouping with only the groups whose results all hold their items' verdicts."""
    return [{key: results for key, results in group.items() if all(map(holds_items, results))} for group in groups]


def whole_set_line(folder: Path | None) -> str:
    """The whole set's cost from its jobs' benchmark files (nothing where no folder is given)."""
    if folder is None:
        return ""
    jobs, seconds = benchmark_wall_time(folder)
    return f"The whole set: {jobs} jobs, {seconds / 3600:.1f} hours of job wall time summed (every job once)."


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


def run(args: ReportArgs) -> None:
    """Write the report and its plots."""
    if not (args.results or args.sequences or args.merges or args.lmeval or args.alpaca_eval):
        raise UserError("--results, --sequences, --merges, --lmeval and --alpaca-eval name no results files")
    by_task = load_results(args.results)
    by_sequence = load_sequences(args.sequences)
    by_merge = load_merges(args.merges)
    lmeval = load_checked(args.lmeval, LMEVAL_REQUIRED, "results file of lm-eval")
    alpaca_eval = load_checked(args.alpaca_eval, ALPACA_EVAL_REQUIRED, "results file of AlpacaEval")
    groups = {("sweep", task): stems(results) for task, results in by_task.items()}
    groups |= {("sequence", tasks): stems(results) for tasks, results in by_sequence.items()}
    groups |= {("merge", tasks): stems(results) for tasks, results in by_merge.items()}
    pairs = place_pairs(map(parse_pair, args.pairs), groups)
    stability = stability_by_task(args.masks, [*by_task, *(task for tasks in by_merge for task in tasks)])
    relative = os.path.relpath(Path(args.plots).resolve(), Path(args.out).resolve().parent)
    # The text first: what it refuses stops the report before any plot is written.
    rows = claim_comparisons(*with_items(by_task, by_sequence, by_merge))
    overlap = sequence_mask_stability(args.sequence_masks)
    claims = claims_section(rows, stability, overlap, whole_set_line(args.benchmarks))
    text = render(
        by_task, by_sequence, by_merge, Path(relative).as_posix(), lmeval, alpaca_eval, pairs, stability, claims
    )
    for task, results in by_task.items():
        plot_task(task, results, args.plots / f"{task}.png")
    for tasks, results in by_sequence.items():
        plot_sequence(tasks, results, args.plots / forgetting_plot(tasks))
    with atomic_path(args.out) as tmp:
        tmp.write_text(text)
    log.info(
        "report on %d runs of %d tasks, %d task-sequence runs, %d merges and %d harness results -> %s",
        len(args.results),
        len(by_task),
        len(args.sequences),
        len(args.merges),
        len(lmeval) + len(alpaca_eval),
        args.out,
    )


if __name__ == "__main__":
    run_main(ReportArgs, run)
