"""The report's plots, PNG files written atomically: accuracy against sparsity per sweep task, and
forgetting and final accuracy per task sequence; each draws the mean over seeds with a marker at each
seed's value."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only: no display on a cluster node
import matplotlib.pyplot as plt  # noqa: E402

from lota.analysis.comparison import group_by_stem
from lota.analysis.results import masked_variants, shape, variant_label
from lota.core.io import atomic_path
from lota.pipeline.names import names_rank

STRATEGY_COLOURS = {
    "task_vector": "tab:green",
    "fisher": "tab:purple",
    "gradient_mean": "tab:brown",
    "base_magnitude": "tab:pink",
    "random": "tab:olive",
}
MASKED_FORMATS = {"lota": "o-", "rosa": "s--"}
SEQUENCE_STYLES = {
    "fft": ("FFT", "tab:blue"),
    "lora": ("LoRA", "tab:orange"),
    "lota": ("LoTA", "tab:olive"),
    "lotto": ("LoTTO (disjoint masks)", "tab:green"),
    "lottoflip": ("LoTTO, flipped-mask calibration", "tab:cyan"),
}
LINE_STYLES = {"fft": ("FFT", "tab:blue"), "lora": ("LoRA", "tab:orange"), "base": ("base", "tab:gray")}


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
