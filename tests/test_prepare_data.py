import copy
import json

import datasets
import huggingface_hub
import pytest

from lota.core.errors import UserError
from lota.prepare_data import PrepareDataArgs, run
from lota.tasks.formats import format_prompt
from lota.tasks.records import prepare_split, resolve_data_dir, seeded_subset


def test_seeded_subset_is_deterministic_and_bounded():
    items = list(range(100))
    assert seeded_subset(items, 10, 0) == seeded_subset(items, 10, 0)
    assert seeded_subset(items, 10, 0) != seeded_subset(items, 10, 1)
    assert sorted(seeded_subset(items, 0, 0)) == items
    assert len(seeded_subset(items, 500, 0)) == 100


def test_records_use_the_chat_template(gsm8k_dir, smol_tokenizer):
    records = prepare_split("gsm8k", "train", gsm8k_dir, smol_tokenizer, size=5, seed=0)
    assert len(records) == 5 and len({r["id"] for r in records}) == 5
    first = records[0]
    assert first["prompt"].startswith("<|im_start|>system") and first["prompt"].endswith("<|im_start|>assistant\n")
    assert first["response"].endswith("<|im_end|>") and "####" in first["response"]
    assert first["gold"] == first["response"].rsplit("####", 1)[1].removesuffix("<|im_end|>").strip().replace(",", "")


def test_plain_prompt_without_chat_template(smol_tokenizer):
    plain = copy.deepcopy(smol_tokenizer)
    plain.chat_template = None
    assert format_prompt("What is 2+2?", plain) == f"{plain.bos_token}Question: What is 2+2?\nAnswer: "
    with pytest.raises(UserError, match="no chat template"):
        format_prompt("What is 2+2?", plain, require_chat_template=True)


def test_run_writes_both_splits(tmp_path, gsm8k_dir, tiny_model):
    args = PrepareDataArgs(
        task="gsm8k",
        tokenizer=tiny_model,
        train_out=tmp_path / "train.jsonl",
        eval_out=tmp_path / "eval.jsonl",
        data_dir=gsm8k_dir,
        train_size=4,
        eval_size=3,
    )
    run(args)
    train = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    evaluation = [json.loads(line) for line in (tmp_path / "eval.jsonl").read_text().splitlines()]
    assert len(train) == 4 and len(evaluation) == 3
    assert set(train[0]) == {"id", "prompt", "response", "gold", "subtask"}


def test_missing_or_malformed_data_is_named(tmp_path, tiny_model, gsm8k_dir):
    args = PrepareDataArgs(
        task="gsm8k", tokenizer=tiny_model, train_out=tmp_path / "t.jsonl", eval_out=tmp_path / "e.jsonl"
    )
    (tmp_path / "empty" / "gsm8k").mkdir(parents=True)
    args.data_dir = tmp_path / "empty"
    with pytest.raises(UserError, match="GSM8K train data not found: .*gsm8k/train.jsonl"):
        run(args)
    (tmp_path / "empty" / "gsm8k" / "train.jsonl").write_text('{"question": "q", "answer": "#### 1"}\n{broken\n')
    with pytest.raises(UserError, match="train.jsonl:2: malformed JSON line"):
        run(args)
    args.data_dir = tmp_path / "nowhere"
    with pytest.raises(UserError, match="data folder not found"):
        run(args)
    assert not (tmp_path / "t.jsonl").exists() and not (tmp_path / "e.jsonl").exists()


def test_data_dir_falls_back_to_the_environment(monkeypatch, gsm8k_dir):
    monkeypatch.setenv("LOTA_DATA_DIR", str(gsm8k_dir))
    assert resolve_data_dir(None) == gsm8k_dir
    monkeypatch.delenv("LOTA_DATA_DIR")
    assert resolve_data_dir(None) is None


def test_no_local_data_and_no_hub_is_a_clear_error(monkeypatch, tmp_path, tiny_model):
    monkeypatch.delenv("LOTA_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    # The libraries read the variables when imported, which an earlier test may have done.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    args = PrepareDataArgs(
        task="gsm8k", tokenizer=tiny_model, train_out=tmp_path / "t.jsonl", eval_out=tmp_path / "e.jsonl"
    )
    with pytest.raises(UserError, match="no local data folder is set .* hub dataset openai/gsm8k could not be loaded"):
        run(args)


def read_ids(path):
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def test_validation_is_carved_from_training_and_every_seed_trains_on_the_rest(tmp_path, gsm8k_dir, tiny_model):
    def prepare(out, **settings):
        out.mkdir()
        args = PrepareDataArgs(
            task="gsm8k",
            tokenizer=tiny_model,
            data_dir=gsm8k_dir,
            train_out=out / "train.jsonl",
            valid_out=out / "valid.jsonl",
            eval_out=out / "eval.jsonl",
            **({"train_size": 4, "eval_size": 3, "valid_size": 3} | settings),
        )
        run(args)
        return {split: read_ids(out / f"{split}.jsonl") for split in ("train", "valid", "eval")}

    base, replicate = prepare(tmp_path / "base"), prepare(tmp_path / "replicate", train_seed=1)
    assert len(base["valid"]) == 3 and len(base["train"]) == 4
    assert base["valid"] == replicate["valid"] and base["eval"] == replicate["eval"]
    assert base["train"] != replicate["train"]
    for split in (base, replicate):
        assert not set(split["train"]) & set(split["valid"])  # ids of the same training file
    everything = len((gsm8k_dir / "gsm8k" / "train.jsonl").read_text().splitlines())
    with pytest.raises(UserError, match=f"valid_size {everything} leaves no training records"):
        prepare(tmp_path / "all", valid_size=everything)


def test_a_task_with_its_own_validation_split_keeps_its_training_records(tmp_path, tiny_model):
    from tests.conftest import SHARED_DATA

    outputs = {"train_out": tmp_path / "train.jsonl", "valid_out": tmp_path / "valid.jsonl"}
    args = PrepareDataArgs(
        task="mawps", tokenizer=tiny_model, data_dir=SHARED_DATA, train_size=5, valid_size=4, **outputs
    )
    run(args)
    valid = [json.loads(line) for line in outputs["valid_out"].read_text().splitlines()]
    questions = {
        record["original_text"] for record in json.loads((SHARED_DATA / "mawps" / "validset.json").read_text())
    }
    assert len(valid) == 4 and len(read_ids(outputs["train_out"])) == 5
    assert all(any(q.split()[0] in record["prompt"] for q in questions) for record in valid)
    without = PrepareDataArgs(
        task="mawps", tokenizer=tiny_model, data_dir=SHARED_DATA, train_size=5, train_out=tmp_path / "t.jsonl"
    )
    run(without)
    assert read_ids(tmp_path / "t.jsonl") == read_ids(outputs["train_out"])  # the same training subset


def test_prepare_data_refuses_to_write_nothing(tiny_model):
    with pytest.raises(UserError, match="writes nothing: give --train-out, --valid-out or --eval-out"):
        run(PrepareDataArgs(task="gsm8k", tokenizer=tiny_model))
