"""The report's Markdown: a sweep's, task sequences' and merges' results as one document (the report
stage, lota.report, writes it beside its plots, lota.analysis.plots).

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

from collections.abc import Callable, Hashable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lota.analysis.claims import CLAIMS, ClaimComparison, answer, benchmark_wall_time, mask_overlap
from lota.analysis.comparison import (
    MaskStability,
    Method,
    Pair,
    PairTable,
    compare_pairs,
    every_pair,
    forgetting_items,
    group_methods,
    holds_items,
    merge_items,
    retained_share,
    run_items,
    summarize,
    sweep_pairs,
    whole_cost,
)
from lota.analysis.plots import forgetting_plot
from lota.analysis.results import masked_variants, shape, variant_label
from lota.analysis.stats import Summary, summary

STRATEGY_NOTE = (
    "At a sparsity every strategy keeps the same number of trainable entries; they differ in what ranks the "
    "entries: task_vector `|finetuned - base|` of the dense calibration run, fisher and gradient_mean the base "
    "model's squared and mean gradients on calibration batches, base_magnitude `|base weight|`, random a seeded "
    "uniform choice. RoSA trains a LoRA adapter and the sparse update together."
)
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


def whole_set_line(folder: Path | None) -> str:
    """The whole set's cost from its jobs' benchmark files (nothing where no folder is given)."""
    if folder is None:
        return ""
    jobs, seconds = benchmark_wall_time(folder)
    return f"The whole set: {jobs} jobs, {seconds / 3600:.1f} hours of job wall time summed (every job once)."
