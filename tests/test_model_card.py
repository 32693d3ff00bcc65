import json

import pytest
import torch
from huggingface_hub import ModelCard

from lota.core.errors import UserError
from lota.core.modeling import load_model
from lota.export import export
from lota.model_card import ModelCardArgs, write_model_card

TRAIN = {"steps": 12, "tokens": 34567, "final_loss": 0.4321, "train_wall_s": 89.6, "device": "cpu", "lr": 5e-05}
RUN = {
    "run": "lota_gsm8k_s90",
    "task": "gsm8k",
    "method": "lota",
    "sparsity": 0.9,
    "lora_rank": None,
    "mask_strategy": "task_vector",
    "accuracy": 0.25,
    "correct": 10,
    "n": 40,
    "ci95": [0.142, 0.403],
    "trainable_params": 12345,
    "train": TRAIN,
    "base_model": "work/base_model",
    "versions": {"lota": "0.1.0", "torch": "2.13.0"},
}


def entry(accuracy, n=20):
    return {"accuracy": accuracy, "correct": round(accuracy * n), "n": n, "ci95": [accuracy / 2, (1 + accuracy) / 2]}


SEQUENCE = {
    "run": "lotto_gsm8k-mawps_s90",
    "method": "lotto",
    "tasks": ["gsm8k", "mawps"],
    "sparsity": 0.9,
    "lora_rank": None,
    "stages": [
        {"stage": 0, "accuracy": {"gsm8k": entry(0.1), "mawps": entry(0.2)}, "trainable_params": 0},
        {"stage": 1, "accuracy": {"gsm8k": entry(0.3), "mawps": entry(0.2)}, "trainable_params": 100},
        {"stage": 2, "accuracy": {"gsm8k": entry(0.25), "mawps": entry(0.5)}, "trainable_params": 100},
    ],
    "final_mean_accuracy": 0.375,
    "base_model": "work/base_model",
}
MERGE = {
    "run": "ties_gsm8k+mawps",
    "method": "ties",
    "tasks": ["gsm8k", "mawps"],
    "settings": {"density": 0.5, "scale": 1.0},
    "accuracy": {"gsm8k": entry(0.15), "mawps": entry(0.45)},
    "base_model": "work/base_model",
}


def written_card(tmp_path, tiny_model, result, kind, base_name=""):
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "result.json").write_text(json.dumps(result))
    out = tmp_path / "release"
    write_model_card(
        ModelCardArgs(model=tiny_model, result=tmp_path / "result.json", kind=kind, out=out, base_name=base_name)
    )
    return out, ModelCard.load(out / "README.md")


def test_a_runs_card_has_the_hubs_metadata_and_how_it_was_made(tmp_path, tiny_model):
    out, card = written_card(tmp_path, tiny_model, RUN, "run", base_name="HuggingFaceTB/SmolLM2-135M-Instruct")
    data = card.data
    assert data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" and data.library_name == "transformers"
    assert data.tags == ["lota", "task-gsm8k", "sparsity-90"] and data.datasets == ["openai/gsm8k"]
    [result] = data.eval_results
    assert (result.dataset_type, result.metric_type, result.metric_value) == ("openai/gsm8k", "accuracy", 0.25)
    assert result.metric_name == "accuracy (95% CI 0.142 to 0.403, 10 of 40)"
    assert "12,345 trainable parameters, 10.0% of the covered weights" in card.text
    assert "12 steps, 34,567 tokens, learning rate 5e-05, final loss 0.4321, 90 s on cpu" in card.text
    assert "| gsm8k | 0.250 | 0.142 to 0.403 | 40 |" in card.text


def test_the_folder_is_the_export_hard_linked_and_loads_as_it_is(tmp_path, tiny_model):
    exported = export(tiny_model, [], tmp_path / "export")
    (exported / ".snakemake_timestamp").touch()
    out, _ = written_card(tmp_path, exported, RUN, "run")
    assert sorted(path.name for path in out.iterdir()) == sorted(
        ["README.md", *(path.name for path in exported.iterdir() if not path.name.startswith("."))]
    )
    weights = next(out.glob("*.safetensors"))
    assert weights.stat().st_ino == (exported / weights.name).stat().st_ino  # a link, not a copy
    model = load_model(out, torch.float32, on=torch.device("cpu"))
    assert model.config.model_type == "llama"


def test_a_sequences_card_scores_its_last_model_and_a_merges_every_task(tmp_path, tiny_model):
    _, card = written_card(tmp_path / "sequence", tiny_model, SEQUENCE, "sequence")
    assert [(r.dataset_name, r.metric_value) for r in card.data.eval_results] == [("gsm8k", 0.25), ("mawps", 0.5)]
    assert card.data.eval_results[1].dataset_type == "mawps"  # no hub copy: the task's own name
    assert card.data.base_model is None and card.data.datasets == ["openai/gsm8k"]
    assert "`lotto` trained on gsm8k, then mawps" in card.text and "0.375" in card.text

    _, card = written_card(tmp_path / "merge", tiny_model, MERGE, "merge")
    assert [(r.dataset_name, r.metric_value) for r in card.data.eval_results] == [("gsm8k", 0.15), ("mawps", 0.45)]
    assert "A `ties` merge of the single-task runs on gsm8k, mawps into the base model (density 0.5" in card.text


def test_a_result_of_another_kind_or_a_folder_without_a_model_is_refused(tmp_path, tiny_model):
    with pytest.raises(UserError, match="is not a single-task run's result"):
        written_card(tmp_path, tiny_model, MERGE, "run")
    (tmp_path / "result.json").write_text(json.dumps(RUN))
    with pytest.raises(UserError, match="exported model's config"):
        write_model_card(ModelCardArgs(model=tmp_path, result=tmp_path / "result.json", kind="run", out=tmp_path / "x"))
    assert not (tmp_path / "release").exists() and not (tmp_path / "x").exists()
