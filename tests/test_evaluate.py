import json

import pytest

from lota.core.cli import parse_args
from lota.core.config import config_errors, load_schema
from lota.core.errors import UserError
from lota.evaluate import EvaluateArgs, evaluate
from lota.evaluation.provenance import stage_costs
from lota.evaluation.scoring import wilson_interval
from tests.conftest import REPO, write_records


def test_wilson_interval_known_values():
    low, high = wilson_interval(2, 128)
    assert low == pytest.approx(0.0043, abs=1e-4) and high == pytest.approx(0.0552, abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == pytest.approx(1.0)


def test_stage_costs_read_snakemake_benchmarks(tmp_path):
    (tmp_path / "b.tsv").write_text("s\th:m:s\tmax_rss\tmax_vms\n12.5\t0:00:12\t512.25\t900\n")
    costs = stage_costs([f"train={tmp_path / 'b.tsv'}", f"export={tmp_path / 'missing.tsv'}"])
    assert costs == {"train": {"wall_s": 12.5, "max_rss_mb": 512.25}}


def test_results_hold_accuracy_and_provenance(tmp_path):
    samples = write_records(
        tmp_path / "samples.jsonl",
        [
            {"id": 0, "completion": "#### 3", "gold": "3", "backend": "transformers"},
            {"id": 1, "completion": "#### 4", "gold": "5"},
        ],
    )
    summary = tmp_path / "summary.json"
    summary.write_text(
        json.dumps(
            {
                "trainable_params": 42,
                "steps": 3,
                "tokens": 10,
                "final_loss": 1.0,
                "train_wall_s": 2.0,
                "tokens_per_s": 5.0,
                "peak_memory_mb": 100.0,
                "device": "cpu",
            }
        )
    )
    args = EvaluateArgs(
        samples=samples,
        task="gsm8k",
        out=tmp_path / "result.json",
        run="lota_gsm8k_s90",
        method="lota",
        sparsity=0.9,
        train_summary=summary,
        config_json='{"seed": 0}',
    )
    evaluate(args)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["accuracy"] == 0.5 and result["n"] == 2 and result["correct"] == 1
    assert result["trainable_params"] == 42 and result["sparsity"] == 0.9 and result["mask_strategy"] is None
    assert result["config"] == {"seed": 0} and "torch" in result["versions"]
    assert result["generation_backend"] == "transformers"
    assert result["items"] == {"0": 1, "1": 0}  # each item's verdict, by id


def test_items_must_have_distinct_ids(tmp_path):
    samples = [{"id": 7, "completion": "#### 3", "gold": "3"}, {"id": 7, "completion": "#### 4", "gold": "4"}]
    args = EvaluateArgs(
        samples=write_records(tmp_path / "samples.jsonl", samples), task="gsm8k", out=tmp_path / "result.json"
    )
    with pytest.raises(UserError, match="sample ids repeat, so items cannot be paired"):
        evaluate(args)
    assert not args.out.exists()


def test_a_rosa_result_records_its_mask_strategy_and_rank(tmp_path):
    samples = write_records(tmp_path / "samples.jsonl", [{"id": 0, "completion": "#### 3", "gold": "3"}])
    argv = ["--samples", str(samples), "--task", "gsm8k", "--out", str(tmp_path / "r.json")]
    argv += ["--run", "rosa_gsm8k_s90_random", "--method", "rosa", "--sparsity", "0.9", "--lora-rank", "16"]
    args = parse_args(EvaluateArgs, argv + ["--mask-strategy", "random"], "")
    evaluate(args)
    result = json.loads((tmp_path / "r.json").read_text())
    assert (result["method"], result["sparsity"], result["lora_rank"]) == ("rosa", 0.9, 16)
    assert result["mask_strategy"] == "random" and result["accuracy"] == 1.0
    assert evaluate(parse_args(EvaluateArgs, argv, ""))["mask_strategy"] is None


def test_default_config_is_valid_and_errors_name_the_key():
    import yaml

    schema = load_schema(REPO / "workflow" / "schemas" / "config.schema.yaml")
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    assert config_errors(config, schema) == []
    config["train"]["lota"]["lr"] = "fast"
    assert config_errors(config, schema)[0] == (
        "config key train.lota.lr: 'fast' is not of type 'number'; or 'fast' is not of type 'array'"
    )
    config["train"]["lota"]["lr"] = 1e-4
    config["train"]["fft"]["batch_size"] = 0
    assert config_errors(config, schema)[0] == "config key train.fft.batch_size: 0 is less than the minimum of 1"


def commonsense_samples(path, rows):
    return write_records(
        path,
        [
            {"id": i, "completion": f"the correct answer is {said}", "gold": gold, "subtask": part}
            for i, (part, said, gold) in enumerate(rows)
        ],
    )


def test_combined_task_reports_each_subtask_and_their_mean(tmp_path):
    others = ["boolq", "openbookqa", "piqa", "social_i_qa", "winogrande"]
    rows = [("arc_challenge", "answer1", "answer1"), ("arc_challenge", "answer2", "answer1")]
    rows += [("arc_easy", "answer1", "answer2")] + [(name, "true", "true") for name in others]
    samples = commonsense_samples(tmp_path / "samples.jsonl", rows)
    result = evaluate(EvaluateArgs(samples=samples, task="commonsense", out=tmp_path / "r.json"))
    low, high = wilson_interval(1, 2)
    assert result["subtasks"]["arc_challenge"] == {"accuracy": 0.5, "correct": 1, "n": 2, "ci95": [low, high]}
    assert result["subtasks"]["arc_easy"]["accuracy"] == 0.0 and result["subtasks"]["boolq"]["accuracy"] == 1.0
    assert result["accuracy"] == pytest.approx(5.5 / 7) and (result["correct"], result["n"]) == (6, 8)
    # Agresti-Coull variances: p~ = (c + 1.92) / (n + 3.84), var = p~ (1 - p~) / (n + 3.84);
    # subtasks at 0/1 and 1/1 still add uncertainty.
    z2 = 1.959963984540054**2
    variance = sum(
        p * (1 - p) / (n + z2) for p, n in [((c + z2 / 2) / (n + z2), n) for c, n in [(1, 2), (0, 1)] + [(1, 1)] * 5]
    )
    half = 1.959963984540054 * variance**0.5 / 7
    assert result["ci95"] == pytest.approx([5.5 / 7 - half, 5.5 / 7 + half])
    plain_half = 1.959963984540054 * (0.5 * 0.5 / 2) ** 0.5 / 7  # only arc_challenge's p(1 - p) / n is above 0
    assert half > 1.5 * plain_half


def test_a_combined_task_needs_every_subtask(tmp_path):
    samples = commonsense_samples(tmp_path / "samples.jsonl", [("boolq", "true", "true")])
    with pytest.raises(UserError, match="no samples of subtask 'arc_challenge', so no mean over commonsense"):
        evaluate(EvaluateArgs(samples=samples, task="commonsense", out=tmp_path / "r.json"))


def test_tasks_without_a_scorer_say_how_they_are_judged(tmp_path):
    samples = write_records(tmp_path / "samples.jsonl", [{"id": 0, "completion": "hi", "gold": "hello"}])
    with pytest.raises(UserError, match="task alpaca has no built-in scorer: judge its samples .* with AlpacaEval"):
        evaluate(EvaluateArgs(samples=samples, task="alpaca", out=tmp_path / "r.json"))
    assert not (tmp_path / "r.json").exists()


def test_the_official_scorer_reads_the_prompt_and_the_completion(tmp_path):
    samples = [
        {"id": 0, "prompt": "Tom has 3 apples.\n", "completion": "The final answer is:  12", "gold": "12"},
        {"id": 1, "prompt": "Tom has 12 apples.\n", "completion": "No idea.", "gold": "12"},  # the question's number
        {"id": 2, "prompt": "Tom has 3 apples.\n", "completion": "#### 12 then 5", "gold": "12"},  # '####': nothing
    ]
    path = write_records(tmp_path / "samples.jsonl", samples)
    official = evaluate(EvaluateArgs(samples=path, task="gsm8k", out=tmp_path / "o.json", official_scoring=["gsm8k"]))
    lota = evaluate(EvaluateArgs(samples=path, task="gsm8k", out=tmp_path / "l.json"))
    assert official["items"] == {"0": 1, "1": 1, "2": 0} and lota["items"] == {"0": 1, "1": 0, "2": 1}
