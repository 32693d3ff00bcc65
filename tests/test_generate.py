import json

import pytest

from lota.errors import UserError
from lota.generate import GenerateArgs, choose_backend, generate, run
from lota.prepare_data import prepare_split
from tests.conftest import write_records


def test_backend_selection_on_a_cpu_machine(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert choose_backend("auto") == "transformers"
    assert choose_backend("transformers") == "transformers"
    with pytest.raises(UserError, match="backend 'vllm' requested but"):
        choose_backend("vllm")


def test_auto_picks_vllm_only_with_vllm_and_a_gpu(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: object() if name == "vllm" else None)
    assert choose_backend("auto") == "vllm"
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert choose_backend("auto") == "transformers"


def test_transformers_generation_writes_samples_in_input_order(tmp_path, tiny_model, gsm8k_dir, smol_tokenizer):
    records = prepare_split("gsm8k", "test", gsm8k_dir, smol_tokenizer, size=5, seed=0)
    data = write_records(tmp_path / "eval.jsonl", records)
    args = GenerateArgs(
        model=tiny_model,
        data=data,
        out=tmp_path / "samples.jsonl",
        backend="transformers",
        batch_size=2,
        max_new_tokens=4,
    )
    run(args)
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [s["id"] for s in samples] == [r["id"] for r in records]
    assert [s["gold"] for s in samples] == [r["gold"] for r in records]
    assert all(s["backend"] == "transformers" and isinstance(s["completion"], str) for s in samples)
    again = generate(args)
    assert [s["completion"] for s in again] == [s["completion"] for s in samples]  # greedy is deterministic


def test_records_without_prompts_are_rejected(tmp_path, tiny_model):
    data = write_records(tmp_path / "eval.jsonl", [{"id": 0, "gold": "1"}])
    with pytest.raises(UserError, match="record 1 needs a string 'prompt'"):
        generate(GenerateArgs(model=tiny_model, data=data, out=tmp_path / "samples.jsonl", backend="transformers"))
