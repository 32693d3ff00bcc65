"""The paper presets: the official code's protocol planned on a GPU config, run end to end on the
CPU preset (on a tiny model), and kept apart from lota's own protocol's outputs."""

import json

import pytest
import yaml
from safetensors import safe_open

from lota.core.config import check_protocol, record_protocol
from lota.core.errors import UserError
from lota.core.io import read_jsonl
from tests.conftest import REPO, plan_preset, refused_plan, snakemake, tiny_workdir


def test_a_folder_refuses_the_outputs_of_another_protocol(tmp_path):
    record = tmp_path / "work" / "protocol.json"
    check_protocol("paper", record)  # a fresh folder takes any protocol
    record_protocol("lota", record)
    check_protocol("lota", record)
    with pytest.raises(UserError, match="config key protocol is 'paper', but this folder's outputs were built under"):
        check_protocol("paper", record)


def test_the_paper_gsm8k_preset_plans_the_official_protocol(tmp_path):
    output = plan_preset(tmp_path, "sweep", "paper-gsm8k.yaml")
    for option in (
        "--eval-subset first --prompt-format plain --target-format official",
        "--optimizer rmsprop --lr 5e-07",
        "--loss-reduction sequence_sum",
        "--max-length 512 --max-prompt-length 256",
        "--rule official",
        "--temperature 0.6 --top-p 0.9 --top-k 50",
        "--official-scoring gsm8k",
    ):
        assert option in output, option
    assert not (tmp_path / "work" / "protocol.json").exists()  # a dry run records nothing


def test_the_paper_cpu_preset_runs_end_to_end_and_keeps_its_folder(tmp_path, tiny_model, gsm8k_dir):
    root = tiny_workdir(tmp_path, tiny_model, gsm8k_dir)
    preset = yaml.safe_load((REPO / "workflow" / "presets" / "paper-cpu.yaml").read_text())
    # The preset on the tiny workdir's sizes: its formats, scorers, recipe, mask rule and decoding.
    sizes = yaml.safe_load((root / "config.yaml").read_text())["tasks"]
    preset["tasks"] = {task: preset["tasks"][task] | sizes[task] for task in ("gsm8k", "mawps")}
    preset["tasks"]["gsm8k"]["max_prompt_length"] = 64
    for method in ("fft", "lota", "lora"):
        preset["train"][method]["batch_size"] = 4
    preset["sweep"] = {"tasks": []}
    targets = ["results/lota_gsm8k_s90.json", "results/lora_mawps.json"]
    done = snakemake(root, "--cores", "2", *targets, overrides=preset)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    records = read_jsonl(root / "work/data/gsm8k/train.jsonl", "records")
    assert all(record["prompt"].endswith("then answer the final number.\n") for record in records)
    assert all("The final answer is: " in record["response"] for record in records)
    evaluation = read_jsonl(root / "work/data/gsm8k/eval.jsonl", "records")
    assert [record["id"] for record in evaluation] == [0, 1, 2, 3]  # the first test items
    summary = json.loads((root / "work/runs/lota_gsm8k_s90/summary.json").read_text())
    assert summary["args"]["loss_reduction"] == "sequence_sum" and summary["args"]["max_prompt_length"] == 64
    with safe_open(root / "work/masks/gsm8k_s90.safetensors", "pt") as mask:
        assert json.loads(mask.metadata()["rule"]) == "official"
    result = json.loads((root / "results/lota_gsm8k_s90.json").read_text())
    assert result["config"]["protocol"] == "paper" and result["config"]["task"]["scorer"] == "official"
    assert result["config"]["generate"]["top_k"] == 50
    assert json.loads((root / "work/protocol.json").read_text()) == {"protocol": "paper"}

    # lota's own protocol in the same folder is refused, before anything is planned over the paper's runs.
    output = refused_plan(root, "results/lota_gsm8k_s90.json")
    assert "config key protocol is 'lota', but this folder's outputs were built under 'paper'" in output
