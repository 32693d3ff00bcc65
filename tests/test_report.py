"""The sweep report: tables, subtask breakdown and plots from results files."""

import json

import pytest

from lota.errors import UserError
from lota.report import ReportArgs, load_results, render, run


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
    paths = []
    for entry in runs:
        path = tmp_path / f"{entry['run']}.json"
        path.write_text(json.dumps(entry))
        paths.append(path)
    return paths


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
    text = render(load_results(sweep_files), "plots")
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
    assert "](plots/commonsense.png)" in out.read_text()
    for task in ("mawps", "commonsense"):
        assert (tmp_path / "results" / "plots" / f"{task}.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_a_file_that_is_not_a_result_is_named(tmp_path):
    stray = tmp_path / "summary.json"
    stray.write_text(json.dumps({"steps": 3}))
    with pytest.raises(UserError, match=r"summary.json is not a results file: it lacks 'run'"):
        load_results([stray])
