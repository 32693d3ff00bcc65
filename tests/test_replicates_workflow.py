"""Replicates and a learning rate chosen on validation, through the real DAG, on a tiny random Llama
and a few GSM8K records: two seeds of FFT and LoTA, LoTA's rate chosen among two; then a LoTTO
sequence whose ARC-Easy stage trains at the rate LoTA chose on ARC-Easy."""

import json

import pytest
import yaml

from tests.conftest import snakemake, tiny_workdir

RATES = [1.0e-4, 3.0e-4]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_model, gsm8k_dir):
    root = tiny_workdir(
        tmp_path_factory.mktemp("replicates"),
        tiny_model,
        gsm8k_dir,
        seeds=[0, 1],
        sweep={"tasks": ["gsm8k"], "sparsities": [90], "methods": ["fft", "lota"]},
        continual={"sequences": [["gsm8k", "arc_easy"]], "methods": ["lotto"], "sparsity": 90},
    )
    config = yaml.safe_load((root / "config.yaml").read_text())
    config["tasks"]["gsm8k"] |= {"train_size": 6, "valid_size": 4}
    config["tasks"]["arc_easy"] |= {"train_size": 4, "valid_size": 2}
    config["train"]["lota"]["lr"] = RATES
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    return root


def read(path):
    return json.loads(path.read_text())


@pytest.mark.slow  # about 4 min: seeds and candidate rates trained for real
def test_seeds_and_a_rate_chosen_on_validation_run_into_the_report(workdir):
    done = snakemake(workdir, "--cores", "2", "sweep")
    assert done.returncode == 0, done.stderr[-3000:]
    data = workdir / "work" / "data" / "gsm8k"
    ids = {
        name: [read_line["id"] for read_line in map(json.loads, (data / name).read_text().splitlines())]
        for name in ("train.jsonl", "train_seed1.jsonl", "valid.jsonl")
    }
    assert len(ids["valid.jsonl"]) == 4 and ids["train.jsonl"] != ids["train_seed1.jsonl"]
    assert not set(ids["valid.jsonl"]) & (set(ids["train.jsonl"]) | set(ids["train_seed1.jsonl"]))

    choice = read(workdir / "results" / "lr" / "lota_gsm8k_s90.json")
    assert [row["lr"] for row in choice["candidates"]] == RATES and choice["lr"] in RATES
    assert all(row["n"] == 4 for row in choice["candidates"])  # scored on the validation records
    best = max(choice["candidates"], key=lambda row: row["accuracy"])["lr"]
    assert choice["lr"] == best
    for run in ("lota_gsm8k_s90", "lota_gsm8k_s90_seed1"):
        result = read(workdir / "results" / f"{run}.json")
        assert result["lr_choice"] == choice and result["n"] == 4
        assert read(workdir / "work" / "runs" / run / "summary.json")["args"]["lr"] == choice["lr"]
    seeded = read(workdir / "results" / "lota_gsm8k_s90_seed1.json")
    assert seeded["config"]["seed"] == 1 and seeded["config"]["train_calibration"]["run"] == "fft_gsm8k_seed1"
    assert set(seeded["items"]) == set(read(workdir / "results" / "lota_gsm8k_s90.json")["items"])
    assert (workdir / "work" / "masks" / "gsm8k_seed1_s90.safetensors").is_file()
    assert read(workdir / "results" / "fft_gsm8k.json")["lr_choice"] is None

    report = (workdir / "results" / "report.md").read_text()
    assert "#### Comparisons over seeds" in report and "| lota_gsm8k_s90 | fft_gsm8k | 0, 1 | 4 |" in report
    assert "#### Mask stability over seeds" in report
    print(report)  # the closing note's example: pytest -s shows it


@pytest.mark.slow  # about 4 min: seeds and candidate rates trained for real
def test_a_later_stage_trains_at_the_rate_its_method_chose_on_that_task(workdir):
    sequence = "lotto_gsm8k-arc_easy_s90_seed1"
    done = snakemake(workdir, "--cores", "2", f"results/cl/{sequence}.json")
    assert done.returncode == 0, done.stderr[-3000:]
    choice = read(workdir / "results" / "lr" / "lota_arc_easy_s90.json")
    assert [row["lr"] for row in choice["candidates"]] == RATES and all(row["n"] == 2 for row in choice["candidates"])
    assert read(workdir / "work" / "cl" / "runs" / sequence / "summary.json")["args"]["lr"] == choice["lr"]
    result = read(workdir / "results" / "cl" / f"{sequence}.json")
    first = read(workdir / "results" / "lr" / "lota_gsm8k_s90.json")["lr"]
    assert [stage["train"]["lr"] for stage in result["stages"][1:]] == [first, choice["lr"]]
