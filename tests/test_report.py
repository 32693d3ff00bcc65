"""The report: sweep tables, subtask breakdown, forgetting tables and plots from results files."""

import json
import re

import pytest
import torch

from lota.analysis.markdown import calibration_note, lr_choice_note, render, run_table, strategy_table
from lota.analysis.plots import plot_masked
from lota.analysis.results import load_results, load_sequences, masked_variants, sort_key
from lota.core.errors import UserError
from lota.report import ReportArgs, run


def result(run, method, accuracy, sparsity=None, rank=None, task="mawps", **extra):
    return {
        "run": run,
        "task": task,
        "method": method,
        "sparsity": sparsity,
        "lora_rank": rank,
        "accuracy": accuracy,
        "ci95": [max(0.0, accuracy - 0.05), min(1.0, accuracy + 0.05)],
        "n": 128,
        "trainable_params": 0 if method == "base" else 1_000_000,
        "train": None if method == "base" else {"train_wall_s": 120.4, "peak_memory_mb": 4321.0},
        **extra,
    }


def write_results(folder, results):
    paths = []
    for entry in results:
        path = folder / f"{entry['run']}.json"
        path.write_text(json.dumps(entry))
        paths.append(path)
    return paths


@pytest.fixture
def sweep_files(tmp_path):
    runs = [
        result(
            "lota_mawps_s99",
            "lota",
            0.20,
            sparsity=0.99,
            stages={"calibrate": {"wall_s": 300.0}},
            config={"train_calibration": {"run": "calibration_mawps"}},
        ),
        result("lota_mawps_s90", "lota", 0.25, sparsity=0.9),
        result("base_mawps", "base", 0.05),
        result("fft_mawps", "fft", 0.30),
        result("lora_mawps", "lora", 0.22, rank=16),
        result(
            "base_commonsense",
            "base",
            0.4,
            task="commonsense",
            subtasks={"arc_easy": {"accuracy": 0.3}, "boolq": {"accuracy": 0.5}},
        ),
    ]
    return write_results(tmp_path, runs)


def test_results_are_grouped_by_task_in_method_then_sparsity_order(sweep_files):
    by_task = load_results(sweep_files)
    assert list(by_task) == ["commonsense", "mawps"]
    assert [r["run"] for r in by_task["mawps"]] == [
        "base_mawps",
        "fft_mawps",
        "lora_mawps",
        "lota_mawps_s90",
        "lota_mawps_s99",
    ]


def test_report_has_a_row_per_run_subtasks_and_the_plot(sweep_files):
    text = render(load_results(sweep_files), {}, {}, "plots")
    assert "| fft_mawps | fft |  | 0.300 [0.250, 0.350] | 128 | 1 M | 120 s | 4,321 MB |" in text
    assert "| lota_mawps_s90 | lota | s = 90% | 0.250 [0.200, 0.300] |" in text
    assert "| lora_mawps | lora | r = 16 |" in text
    assert "| base_mawps | base |  | 0.050 [0.000, 0.100] | 128 | – | – | – |" in text
    assert "| run | arc_easy | boolq | mean |" in text and "| base_commonsense | 0.300 | 0.500 | 0.400 |" in text
    assert "dense calibration run (calibration_mawps), 300 s" in text
    assert "![mawps: accuracy vs sparsity](plots/mawps.png)" in text


def test_run_writes_the_report_and_one_png_per_task(sweep_files, tmp_path):
    out = tmp_path / "results" / "report.md"
    run(ReportArgs(results=sweep_files, out=out, plots=tmp_path / "results" / "plots"))
    assert "## Continual learning" not in out.read_text()
    assert "](plots/commonsense.png)" in out.read_text()
    for task in ("mawps", "commonsense"):
        assert (tmp_path / "results" / "plots" / f"{task}.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def masked(run, accuracy, sparsity, strategy=None, task="gsm8k"):
    """A LoTA run, or RoSA at rank 16 where `run` starts with rosa; `strategy` None leaves mask_strategy out."""
    method = run.split("_")[0]
    extra = {} if strategy is None else {"mask_strategy": strategy}
    return result(run, method, accuracy, sparsity=sparsity, rank=16 if method == "rosa" else None, task=task, **extra)


STRATEGY_RUNS = [
    masked("lota_gsm8k_s99_random", 0.10, 0.99, "random"),
    masked("rosa_gsm8k_s90", 0.27, 0.9, "fisher"),
    masked("lota_gsm8k_s90_random", 0.15, 0.9, "random"),
    masked("lota_gsm8k_s99", 0.20, 0.99, "task_vector"),
    masked("lota_gsm8k_s90_fisher", 0.22, 0.9, "fisher"),
    masked("lota_gsm8k_s90", 0.25, 0.9),
    result("fft_gsm8k", "fft", 0.30, task="gsm8k"),
    masked("lota_gsm8k_s99_fisher", 0.18, 0.99, "fisher"),
]
STRATEGY_TABLE = [
    "",
    "#### Mask strategies",
    "",
    "| sparsity | LoTA task_vector | LoTA fisher | LoTA random | RoSA |",
    "|---:|---:|---:|---:|---:|",
    "| 90% | 0.250 [0.200, 0.300] | 0.220 [0.170, 0.270] | 0.150 [0.100, 0.200] | 0.270 [0.220, 0.320] |",
    "| 99% | 0.200 [0.150, 0.250] | 0.180 [0.130, 0.230] | 0.100 [0.050, 0.150] | – |",
    "",
]


@pytest.fixture
def strategy_files(tmp_path):
    return write_results(tmp_path, STRATEGY_RUNS)


def test_masked_runs_are_ordered_by_sparsity_then_strategy_and_rosa_follows_lota(strategy_files):
    assert [r["run"] for r in load_results(strategy_files)["gsm8k"]] == [
        "fft_gsm8k",
        "lota_gsm8k_s90",
        "lota_gsm8k_s90_fisher",
        "lota_gsm8k_s90_random",
        "lota_gsm8k_s99",
        "lota_gsm8k_s99_fisher",
        "lota_gsm8k_s99_random",
        "rosa_gsm8k_s90",
    ]


def test_every_strategy_sorts_in_its_place_and_a_missing_one_counts_as_the_default():
    strategies = ["other", "random", "base_magnitude", None, "gradient_mean", "fisher"]
    runs = [masked(f"lota_gsm8k_s90_{strategy}", 0.2, 0.9, strategy) for strategy in strategies]
    runs += [masked("rosa_gsm8k_s90_random", 0.2, 0.9, "random"), masked("rosa_gsm8k_s90_None", 0.2, 0.9)]
    assert [r["run"].removeprefix("lota_gsm8k_s90_") for r in sorted(runs, key=sort_key)] == [
        "None",
        "fisher",
        "gradient_mean",
        "base_magnitude",
        "random",
        "other",
        "rosa_gsm8k_s90_None",
        "rosa_gsm8k_s90_random",
    ]


def test_the_run_table_names_a_strategy_other_than_the_methods_default(strategy_files):
    text = render(load_results(strategy_files), {}, {}, "plots")
    assert "| lota_gsm8k_s90 | lota | s = 90% | 0.250 [0.200, 0.300] | 128 | 1 M | 120 s | 4,321 MB |" in text
    assert "| lota_gsm8k_s99 | lota | s = 99% | 0.200 [0.150, 0.250] |" in text
    assert "| lota_gsm8k_s90_random | lota | s = 90%, random | 0.150 [0.100, 0.200] |" in text
    assert "| lota_gsm8k_s99_fisher | lota | s = 99%, fisher | 0.180 [0.130, 0.230] |" in text
    assert "| rosa_gsm8k_s90 | rosa | s = 90%, r = 16 | 0.270 [0.220, 0.320] |" in text
    rosa_random = run_table([masked("rosa_gsm8k_s90_random", 0.2, 0.9, "random")])[2]
    assert rosa_random.startswith("| rosa_gsm8k_s90_random | rosa | s = 90%, r = 16, random | 0.200 [0.150, 0.250] |")


def test_the_strategy_table_has_a_row_per_sparsity_and_a_column_per_method_and_strategy(strategy_files):
    text = render(load_results(strategy_files), {}, {}, "plots")
    lines = text.splitlines()
    start = lines.index("#### Mask strategies") - 1
    assert lines[start : start + len(STRATEGY_TABLE)] == STRATEGY_TABLE
    note = lines[start + len(STRATEGY_TABLE)]
    assert note.startswith("At a sparsity every strategy keeps the same number of trainable entries;")
    assert "task_vector `|finetuned - base|` of the dense calibration run" in note
    assert "RoSA trains a LoRA adapter and the sparse update together." in note
    heading = text.index("#### Mask strategies")
    assert text.index("| rosa_gsm8k_s90 | rosa |") < heading < text.index("![gsm8k: accuracy vs sparsity]")


def test_rosa_with_several_strategies_gets_a_column_each_and_lota_alone_none():
    runs = [masked("rosa_gsm8k_s99_random", 0.1, 0.99, "random"), masked("rosa_gsm8k_s90", 0.3, 0.9)]
    assert strategy_table(runs)[3:7] == [
        "| sparsity | RoSA fisher | RoSA random |",
        "|---:|---:|---:|",
        "| 90% | 0.300 [0.250, 0.350] | – |",
        "| 99% | – | 0.100 [0.050, 0.150] |",
    ]
    one_rosa = [masked("rosa_gsm8k_s90_random", 0.3, 0.9, "random"), masked("lota_gsm8k_s90", 0.2, 0.9)]
    assert strategy_table(one_rosa)[3] == "| sparsity | LoTA task_vector | RoSA random |"
    lota_only = [masked("lota_gsm8k_s90", 0.2, 0.9), masked("lota_gsm8k_s99", 0.1, 0.99, "task_vector")]
    assert strategy_table(lota_only) == []


def test_a_task_with_only_default_lota_runs_has_no_strategy_table(sweep_files):
    assert "Mask strategies" not in render(load_results(sweep_files), {}, {}, "plots")


def test_the_plot_has_a_line_per_method_and_strategy(strategy_files, tmp_path):
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots()
    plot_masked(axes, masked_variants(load_results(strategy_files)["gsm8k"]))
    assert axes.get_legend_handles_labels()[1] == ["LoTA", "LoTA fisher", "LoTA random", "RoSA"]
    assert [label.get_text() for label in axes.get_xticklabels()] == ["90", "99"]
    plt.close(figure)
    out = tmp_path / "results" / "report.md"
    run(ReportArgs(results=strategy_files, out=out, plots=tmp_path / "results" / "plots"))
    assert "#### Mask strategies" in out.read_text()
    assert (tmp_path / "results" / "plots" / "gsm8k.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_a_file_that_is_not_a_result_is_named(tmp_path):
    stray = tmp_path / "summary.json"
    stray.write_text(json.dumps({"steps": 3}))
    with pytest.raises(UserError, match=r"summary.json is not a results file: it lacks 'run'"):
        load_results([stray])


def proportion(accuracy):
    return {"accuracy": accuracy, "ci95": [max(0.0, accuracy - 0.1), min(1.0, accuracy + 0.1)]}


def sequence(run, method, matrix, sparsity=None, overlap=None):
    """A two-stage result on mawps then arc_easy; `matrix` is the accuracy of stages 0, 1, 2."""
    stages = [
        {
            "stage": stage,
            "trained_on": [None, "mawps", "arc_easy"][stage],
            "accuracy": {"mawps": proportion(row[0]), "arc_easy": proportion(row[1])},
            "trainable_params": 0 if stage == 0 else 2_000_000,
            "train": None if stage == 0 else {"train_wall_s": 61.0},
        }
        for stage, row in enumerate(matrix)
    ]
    drop = matrix[1][0] - matrix[2][0]
    return {
        "run": run,
        "method": method,
        "tasks": ["mawps", "arc_easy"],
        "sparsity": sparsity,
        "lora_rank": None,
        "stages": stages,
        "forgetting": {
            "mawps": {
                "difference": drop,
                "ci95": [drop - 0.05, drop + 0.05],
                "lost": 30,
                "gained": 2,
                "n": 238,
                "after_own_stage": matrix[1][0],
                "after_last_stage": matrix[2][0],
            }
        },
        "final_mean_accuracy": sum(matrix[2]) / 2,
        "mask_overlap": overlap,
        "training_jobs": {"1:train": {"wall_s": 250.4}, "2:train": {"wall_s": 300.0}},
    }


@pytest.fixture
def sequence_files(tmp_path):
    runs = [
        sequence("lotto_mawps-arc_easy_s90", "lotto", [[0.04, 0.3], [0.2, 0.3], [0.18, 0.4]], 0.9, {"1-2": 0}),
        sequence("fft_mawps-arc_easy", "fft", [[0.04, 0.3], [0.19, 0.25], [0.05, 0.45]]),
    ]
    return write_results(tmp_path, runs)


def test_the_forgetting_table_has_a_row_per_method_and_the_stage_matrix(sequence_files):
    by_sequence = load_sequences(sequence_files)
    assert list(by_sequence) == [("mawps", "arc_easy")]
    assert [r["method"] for r in by_sequence["mawps", "arc_easy"]] == ["fft", "lotto"]
    text = render({}, by_sequence, {}, "plots")
    assert "## Sweep" not in text and "### mawps → arc_easy" in text
    assert "| run | shape | mawps after mawps | mawps at end | forgetting mawps [95% CI] | lost / regained " in text
    fft_row = "| fft_mawps-arc_easy |  | 0.190 | 0.050 | +0.140 [+0.090, +0.190] | 30 / 2 | 0.300 | 0.450 | 0.250 "
    fft_row += "| 550 s |"
    assert fft_row in text
    assert "| lotto_mawps-arc_easy_s90 | s = 90% | 0.200 | 0.180 | +0.020 [-0.030, +0.070] |" in text
    stage_row = "| fft_mawps-arc_easy | 2 | arc_easy | 0.050 [0.000, 0.150] | 0.450 [0.350, 0.550] | 2 M | 61 s |"
    assert stage_row in text
    assert "| fft_mawps-arc_easy | 0 | base | 0.040 [0.000, 0.140] | 0.300 [0.200, 0.400] | – | – |" in text
    assert "lotto_mawps-arc_easy_s90: stages 1-2: 0" in text
    assert "![mawps-arc_easy: forgetting](plots/forgetting_mawps-arc_easy.png)" in text


def test_run_writes_the_forgetting_plot(sequence_files, sweep_files, tmp_path):
    out = tmp_path / "results" / "report.md"
    run(ReportArgs(results=sweep_files, sequences=sequence_files, out=out, plots=tmp_path / "results" / "plots"))
    text = out.read_text()
    assert text.index("## Sweep") < text.index("## Continual learning")
    png = tmp_path / "results" / "plots" / "forgetting_mawps-arc_easy.png"
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_a_report_needs_some_results(tmp_path):
    with pytest.raises(UserError, match="--lmeval and --alpaca-eval name no results files"):
        run(ReportArgs(out=tmp_path / "report.md", plots=tmp_path / "plots"))
    assert not (tmp_path / "report.md").exists()


TASKS = ("mawps", "arc_easy")


def per_task(values, **extra):
    return {task: proportion(value) | extra for task, value in zip(TASKS, values, strict=True)}


def merged(run, method, accuracies, scale=1.0, runs=("fft_mawps", "fft_arc_easy")):
    """A merge of mawps and arc_easy with the given accuracies, beside single-task runs at 0.2 and 0.4."""
    single = {task: part | {"run": name} for (task, part), name in zip(per_task((0.2, 0.4)).items(), runs, strict=True)}
    return {
        "run": run,
        "method": method,
        "tasks": list(TASKS),
        "settings": {"scale": scale},
        "accuracy": per_task(accuracies),
        "mean_accuracy": sum(accuracies) / 2,
        "single_task": single,
        "retained": {task: value / single[task]["accuracy"] for task, value in zip(TASKS, accuracies, strict=True)},
        "base": per_task((0.04, 0.12)),
        "merge": {"wall_s": 12.3, "peak_rss_mb": 812.0},
    }


def test_the_merge_table_sets_each_merge_beside_the_single_task_runs_and_the_base(tmp_path):
    files = write_results(
        tmp_path,
        [
            merged("lotasum_mawps+arc_easy_s90", "lotasum", [0.2, 0.3], runs=("lota_mawps_s90", "lota_arc_easy_s90")),
            merged("ties_mawps+arc_easy_l0.5", "ties", [0.1, 0.2], scale=0.5),
            merged("ties_mawps+arc_easy", "ties", [0.15, 0.3]),
            merged("ta_mawps+arc_easy", "ta", [0.1, 0.4]),
        ],
    )
    out = tmp_path / "report.md"
    run(ReportArgs(merges=files, out=out, plots=tmp_path / "plots"))
    text = out.read_text()
    assert "## Merging" in text and "### mawps + arc_easy" in text and "## Sweep" not in text
    rows = [line for line in text.splitlines() if line.startswith("| ")][1:]
    assert [row.split(" | ")[0] for row in rows] == [
        "| base",
        "| fft_mawps, fft_arc_easy",
        "| lota_mawps_s90, lota_arc_easy_s90",
        "| ta_mawps+arc_easy",
        "| ties_mawps+arc_easy_l0.5",
        "| ties_mawps+arc_easy",
        "| lotasum_mawps+arc_easy_s90",
    ]
    assert (
        "| ties_mawps+arc_easy | 1 | 0.150 [0.050, 0.250] | 0.300 [0.200, 0.400] | 0.225 | 75% | 12 s | 812 MB |"
        in rows
    )
    assert rows[0].startswith("| base | | 0.040 [0.000, 0.140] | 0.120 [0.020, 0.220] | 0.080 |")


def test_the_harness_tables_give_each_metric_and_win_rate_with_its_standard_error(tmp_path):
    lmeval = {
        "run": "lmeval_base_gsm8k",
        "model": "base_gsm8k",
        "harness_version": "0.4.13",
        "backend": "hf",
        "tasks": {
            "gsm8k": {
                "metrics": {"exact_match,strict-match": {"value": 0.0625, "stderr": 0.0435}},
                "n": 32,
                "n_total": 1319,
                "num_fewshot": 5,
            },
            "arc_easy": {
                "metrics": {"acc,none": {"value": 0.5, "stderr": None}},
                "n": 32,
                "n_total": 2376,
                "num_fewshot": 0,
            },
        },
    }
    alpaca = {
        "run": "alpaca_lota_alpaca_s90",
        "model": "lota_alpaca_s90",
        "judge": "weighted_alpaca_eval_local",
        "judge_model": "work/base_model",
        "win_rate": 12.34,
        "standard_error": 3.21,
        "length_controlled_winrate": None,
        "n_total": 16.0,
        "avg_length": 1234.5,
        "reference": "gpt4_1106_preview",
    }
    out = tmp_path / "report.md"
    lmeval_file, alpaca_file = write_results(tmp_path, [lmeval, alpaca])
    run(ReportArgs(lmeval=[lmeval_file], alpaca_eval=[alpaca_file], out=out, plots=tmp_path / "plots"))
    text = out.read_text()
    assert text.index("## lm-evaluation-harness") < text.index("## AlpacaEval") and "## Sweep" not in text
    assert "| base_gsm8k | gsm8k | exact_match,strict-match | 0.062 ± 0.043 | 32 of 1319 | 5 | hf |" in text
    assert "| base_gsm8k | arc_easy | acc,none | 0.500 | 32 of 2376 | 0 | hf |" in text
    assert (
        "| lota_alpaca_s90 | weighted_alpaca_eval_local (work/base_model) | 12.3% ± 3.2 | – | 16 | 1,234 chars"
        " | gpt4_1106_preview |" in text
    )
    with pytest.raises(UserError, match="is not a results file of AlpacaEval: it lacks 'judge'"):
        run(ReportArgs(alpaca_eval=[lmeval_file], out=out, plots=tmp_path / "plots"))


# --- comparisons over seeds -------------------------------------------------------------


def replicate(run, seed, verdicts, sparsity=None, rank=None):
    """A single-task result on mawps items a-f at `seed`; its jobs take 100 s per seed number past 0 and 20 s."""
    jobs = {"train": {"wall_s": 100.0 * (seed + 1), "max_rss_mb": 1000.0 + 500 * seed}, "generate": {"wall_s": 20.0}}
    accuracy = sum(verdicts) / len(verdicts)
    extra = {"items": dict(zip("abcdef", verdicts, strict=True)), "config": {"seed": seed}, "stages": jobs}
    return result(run, run.split("_")[0], accuracy, sparsity=sparsity, rank=rank, **extra)


SEEDED_RUNS = [
    replicate("fft_mawps", 0, [1, 1, 0, 0, 1, 0]),
    replicate("fft_mawps_seed1", 1, [1, 0, 0, 0, 1, 0]),
    replicate("lora_mawps", 0, [1, 0, 0, 0, 0, 0], rank=16),
    replicate("lora_mawps_seed1", 1, [1, 0, 0, 0, 0, 0], rank=16),
    replicate("lota_mawps_s90_seed1", 1, [1, 1, 1, 0, 1, 0], sparsity=0.9),
    replicate("lota_mawps_s90", 0, [1, 1, 1, 1, 1, 0], sparsity=0.9),
]


def seeded_sequence(run, method, seed, own, last, sparsity=None):
    """A mawps then arc_easy sequence at `seed` with items: `own` and `last` are mawps's verdicts on items
    a-d after stages 1 and 2."""
    entry = sequence(run, method, [[0.0, 0.0], [sum(own) / 4, 1.0], [sum(last) / 4, 1.0]], sparsity)
    for stage, verdicts in zip(entry["stages"], [[0] * 4, own, last], strict=True):
        stage["accuracy"]["mawps"]["items"] = dict(zip("abcd", verdicts, strict=True))
        stage["accuracy"]["arc_easy"]["items"] = {"a": 1, "b": 1}
    return entry | {"config": {"seed": seed}}


SEEDED_SEQUENCES = [
    seeded_sequence("fft_mawps-arc_easy", "fft", 0, [1, 1, 1, 1], [0, 1, 0, 1]),
    seeded_sequence("fft_mawps-arc_easy_seed1", "fft", 1, [1, 1, 0, 0], [0, 0, 0, 0]),
    seeded_sequence("lotto_mawps-arc_easy_s90", "lotto", 0, [1, 1, 0, 1], [1, 1, 0, 1], 0.9),
    seeded_sequence("lotto_mawps-arc_easy_s90_seed1", "lotto", 1, [1, 1, 1, 0], [1, 0, 1, 0], 0.9),
]


def seeded_merge(run, method, seed, mawps, arc_easy):
    """A merge at `seed` with its verdicts on two items of each task."""
    entry = merged(run, method, [sum(mawps) / 2, sum(arc_easy) / 2])
    for task, verdicts in (("mawps", mawps), ("arc_easy", arc_easy)):
        entry["accuracy"][task]["items"] = dict(zip("ab", verdicts, strict=True))
    return entry | {"config": {"seed": seed}, "stages": {"merge": {"wall_s": 12.0, "max_rss_mb": 800.0}}}


SEEDED_MERGES = [
    seeded_merge("ta_mawps+arc_easy", "ta", 0, [1, 0], [0, 0]),
    seeded_merge("ta_mawps+arc_easy_seed1", "ta", 1, [1, 1], [0, 0]),
    seeded_merge("lotasum_mawps+arc_easy_s90", "lotasum", 0, [1, 1], [1, 0]),
    seeded_merge("lotasum_mawps+arc_easy_s90_seed1", "lotasum", 1, [1, 1], [1, 1]),
]


def pair_row(a, b, items, difference, rest):
    """A pair's row at seeds 0 and 1, with any bootstrap interval (whose ends the tests do not compute)."""
    interval = r"\[[+-]\d\.\d{3}, [+-]\d\.\d{3}\]"
    return re.compile(re.escape(f"| {a} | {b} | 0, 1 | {items} | {difference} ") + interval + re.escape(f" | {rest} |"))


@pytest.fixture
def seeded_report(tmp_path):
    """The report of two seeds of a sweep, a task sequence and a merge, and of two seeds' masks."""
    from lota.deltas.masks import save_mask

    masks = []
    stages = ("lotto_mawps-arc_easy_s90", [0, 0, 1, 1]), ("lotto_mawps-arc_easy_s90_seed1", [0, 0, 0, 1])
    for name, entries in (("mawps_s90", [1, 1, 0, 0]), ("mawps_seed1_s90", [1, 0, 1, 0]), *stages):
        masks.append(tmp_path / f"{name}.safetensors")
        save_mask(masks[-1], {"w": torch.tensor(entries, dtype=torch.bool)}, {"sparsity": 0.5})
    (tmp_path / "cl").mkdir()
    (tmp_path / "merge").mkdir()
    out = tmp_path / "results" / "report.md"
    args = ReportArgs(
        results=write_results(tmp_path, SEEDED_RUNS),
        sequences=write_results(tmp_path / "cl", SEEDED_SEQUENCES),
        merges=write_results(tmp_path / "merge", SEEDED_MERGES),
        masks=masks[:2],
        sequence_masks=masks[2:],
        out=out,
        plots=tmp_path / "results" / "plots",
    )
    run(args)
    return args


def test_the_sweep_compares_methods_over_seeds_in_pairs_and_masks(seeded_report):
    text = seeded_report.out.read_text()
    assert text.index("### mawps") < text.index("#### Comparisons over seeds") < text.index("#### Mask stability")
    assert "Holm p adjusts all (pair, seed) p-values of a task's table together" in text
    # Accuracy over seeds: fft 3/6 and 2/6, lota 5/6 and 4/6, sd (1/6) / sqrt(2); jobs 120 s and 220 s.
    assert "| method | seeds | accuracy: mean ± std (each seed) | whole time | peak memory |" in text
    assert "| fft_mawps | 0, 1 | 0.417 ± 0.118 (0.500, 0.333) | 170 s | 1,250 MB |" in text
    assert "| lota_mawps_s90 | 0, 1 | 0.750 ± 0.118 (0.833, 0.667) | 170 s | 1,250 MB |" in text
    assert "| A | B | seeds | items | A − B [95% CI] | McNemar p | Holm p | MDD |" in text
    # Item means lota 1, 1, 1, 0.5, 1, 0 against fft 1, 0.5, 0, 0, 1, 0 and lora 1, 0, 0, 0, 0, 0.
    # McNemar: against fft 2 to 0 discordant items at both seeds (p 0.5); against lora 4 to 0 (0.125) and 3 to 0
    # (0.25). Holm over the four: 0.125 * 4, 0.25 * 3, then 0.5 * 2 = 1 twice. MDD: 2.8016 * sd / sqrt(6) of the
    # differences 0, .5, 1, .5, 0, 0 (sd sqrt(1/6)) and 0, 1, 1, .5, 1, 0 (sd sqrt(0.241667)).
    assert pair_row("lota_mawps_s90", "fft_mawps", 6, "+0.333", "0.500, 0.500 | 1.000, 1.000 | 0.467").search(text)
    assert pair_row("lota_mawps_s90", "lora_mawps", 6, "+0.583", "0.125, 0.250 | 0.500, 0.750 | 0.562").search(text)
    # The masks' trainable entries: 0 and 1 against 0 and 2; Jaccard 1/3, agreement on entries 0 and 3.
    assert "| mask | seeds | Jaccard | mean agreement per tensor |" in text
    assert "| s = 90%, task_vector | base – 1 | 0.333 | 0.5000 |" in text


def test_sequences_and_merges_compare_methods_over_seeds(seeded_report):
    text = seeded_report.out.read_text()
    sequence_part = text[text.index("## Continual learning") : text.index("## Merging")]
    assert "| method | seeds | forgetting mawps | mean at end | whole time | peak memory |" in sequence_part
    assert (
        "| fft_mawps-arc_easy | 0, 1 | +0.500 ± 0.000 (+0.500, +0.500) | 0.625 ± 0.177 (0.750, 0.500) | 550 s | – |"
        in (sequence_part)
    )
    assert "| lotto_mawps-arc_easy_s90 | 0, 1 | +0.125 ± 0.177 (+0.000, +0.250) |" in sequence_part
    # Forgetting per item, averaged over seeds: lotto 0, .5, 0, 0; fft 1, .5, .5, 0; no McNemar on forgetting.
    assert "| A | B | seeds | items | forgetting mawps A − B [95% CI] | MDD |" in sequence_part
    assert pair_row("lotto_mawps-arc_easy_s90", "fft_mawps-arc_easy", 4, "-0.375", "0.671").search(sequence_part)
    merge_part = text[text.index("## Merging") :]
    assert "| method | seeds | mean accuracy | kept of single-task | whole time | peak memory |" in merge_part
    assert "| ta_mawps+arc_easy | 0, 1 | 0.375 ± 0.177 (0.250, 0.500) |" in merge_part
    assert "| lotasum_mawps+arc_easy_s90 | 0, 1 | 0.875 ± 0.177 (0.750, 1.000) |" in merge_part
    # Pooled items mawps/a, mawps/b, arc_easy/a, arc_easy/b: lotasum 1, 1, 1, .5 against ta 1, .5, 0, 0.
    lotasum, ta = "lotasum_mawps+arc_easy_s90", "ta_mawps+arc_easy"
    assert pair_row(lotasum, ta, 4, "+0.500", "0.500, 0.500 | 1.000, 1.000 | 0.572").search(merge_part)


def test_the_plots_of_seeds_are_pngs_with_a_point_per_seed(seeded_report):
    import matplotlib.pyplot as plt

    for name in ("mawps.png", "forgetting_mawps-arc_easy.png"):
        assert (seeded_report.plots / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    figure, axes = plt.subplots()
    plot_masked(axes, masked_variants(load_results(seeded_report.results)["mawps"]))
    line = axes.containers[0].lines[0]
    assert line.get_ydata() == pytest.approx([0.75])  # the mean of the two seeds
    assert axes.collections[-1].get_offsets().flatten().tolist() == pytest.approx([10, 5 / 6, 10, 4 / 6])
    plt.close(figure)


def test_extra_pairs_join_their_table_and_bad_ones_are_refused(seeded_report, tmp_path):
    seeded_report.pairs = ["lora_mawps:fft_mawps", "ta_mawps+arc_easy:lotasum_mawps+arc_easy_s90"]
    run(seeded_report)
    text = seeded_report.out.read_text()
    # lora's item means 1, 0, 0, 0, 0, 0 against fft's 1, 0.5, 0, 0, 1, 0; McNemar 0 to 2 items, then 0 to 1.
    assert pair_row("lora_mawps", "fft_mawps", 6, "-0.250", "0.500, 1.000").search(text)
    assert pair_row("ta_mawps+arc_easy", "lotasum_mawps+arc_easy_s90", 4, "-0.500", "0.500, 0.500").search(text)
    for pairs, message in (
        (["lota_mawps_s90:ta_mawps+arc_easy"], "no task, task sequence or merged task set has results of both"),
        (["lota_mawps_s90"], "pair 'lota_mawps_s90' is not A:B"),
    ):
        fresh = ReportArgs(**{**vars(seeded_report), "pairs": pairs, "out": tmp_path / "other.md"})
        fresh.plots = tmp_path / "other_plots"
        with pytest.raises(UserError, match=message):
            run(fresh)
        assert not fresh.out.exists() and not fresh.plots.exists()


def test_masks_of_a_task_without_results_are_refused(seeded_report):
    stray = seeded_report.masks[0].with_name("gsm8k_s90.safetensors")
    stray.write_bytes(seeded_report.masks[0].read_bytes())
    seeded_report.masks = [stray]
    with pytest.raises(UserError, match="--masks: task 'gsm8k' has masks but no results among --results"):
        run(seeded_report)


def test_results_without_items_are_named_and_not_compared(tmp_path):
    files = write_results(tmp_path, [SEEDED_RUNS[0], result("lora_mawps", "lora", 0.2, rank=16)])
    text = render(load_results(files), {}, {}, "plots")
    assert "#### Comparisons over seeds" in text
    assert "Not compared: lora_mawps hold no items' verdicts (evaluated by an older lota)." in text
    assert "| A | B |" not in text
    assert "Comparisons over seeds" not in render(load_results(files[1:]), {}, {}, "plots")


def test_the_calibration_note_names_each_seeds_dense_run():
    def lota(run, wall_s):
        return {
            "method": "lota",
            "stages": {"calibrate": {"wall_s": wall_s}},
            "config": {"train_calibration": {"run": run}},
        }

    one = calibration_note([lota("fft_mawps", 30.0)])
    assert one == ["", "LoTA's masks come from one dense calibration run (fft_mawps), 30 s."]
    two = calibration_note([lota("fft_mawps", 30.0), lota("fft_mawps_seed1", 50.0)])
    assert "one dense calibration run per seed (fft_mawps, fft_mawps_seed1), 40 s each on average" in two[1]


def test_the_learning_rates_chosen_on_validation_are_listed_with_their_candidates():
    choice = {
        "run": "lota_mawps_s90",
        "lr": 3e-4,
        "candidates": [{"lr": 1e-4, "correct": 1, "n": 4}, {"lr": 3e-4, "correct": 3, "n": 4}],
    }
    note = lr_choice_note([{"lr_choice": choice}, {"lr_choice": choice}, {"lr_choice": None}])
    assert note[2:] == ["- lota_mawps_s90 and its seeds: 0.0003, of 0.0001 (1/4), 0.0003 (3/4)"]
    assert lr_choice_note([{"lr_choice": None}]) == []


def test_the_claims_come_first_with_each_answer_and_the_masks_across_seeds(seeded_report, tmp_path):
    text = seeded_report.out.read_text()
    assert text.index("## The paper's claims") < text.index("## Sweep")
    assert (
        "| 1 | mawps | lota_mawps_s90 | fft_mawps | accuracy | 0.750 ± 0.118 (0.833, 0.667)"
        " | 0.417 ± 0.118 (0.500, 0.333) | 6 | +0.333 [" in text
    )
    assert "| 0.250 | 0.750 | 0.467 | cannot tell |" in text  # p, Holm p, MDD (the pair table's), verdict
    assert "| 2 | mawps → arc_easy: mawps | lotto_mawps-arc_easy_s90 | fft_mawps-arc_easy | forgetting mawps |" in text
    assert "- Claim 1, LoTA matches or beats FFT on the target task: **cannot tell**." in text
    # The ARC stage's masks: entries 2, 3 against 3, Jaccard 1/2.
    masks = "Masks across seeds (LoTA's, Jaccard index of two seeds' trainable entries, mean over pairs): mawps s90"
    assert masks + " 0.333; lotto_mawps-arc_easy_s90's last stage 0.500." in text
    assert "The whole set:" not in text  # no benchmarks folder given
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "report.tsv").write_text("s\th:m:s\n5400.0\t1:30:00\n")
    run(ReportArgs(**{**vars(seeded_report), "benchmarks": tmp_path / "benchmarks"}))
    assert "The whole set: 1 jobs, 1.5 hours of job wall time summed (every job once)." in seeded_report.out.read_text()
