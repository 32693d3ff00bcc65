import json
from dataclasses import dataclass

import pytest
import torch
from transformers.cache_utils import Cache
from transformers.utils import ModelOutput

from lota.core.errors import UserError
from lota.core.modeling import load_model
from lota.evaluation.generation import GenerateArgs, choose_backend, decode, generate, token_picker
from lota.generate import run
from lota.tasks.records import prepare_split
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


def left_padded_prompts(tokenizer):
    tokenizer.padding_side = "left"
    texts = ["Q: 2 + 2?", "A much longer question about apples and pears, and how many are left?", "Hi"]
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)


def test_decoding_drops_finished_rows_and_matches_transformers_generate(tiny_model, smol_tokenizer):
    model = load_model(tiny_model, torch.float32, False, torch.device("cpu")).eval()
    batch = left_padded_prompts(smol_tokenizer)
    settings = {"max_new_tokens": 10, "do_sample": False, "pad_token_id": smol_tokenizer.pad_token_id}
    with torch.inference_mode():
        free = model.generate(**batch, eos_token_id=None, **settings)[:, batch["input_ids"].shape[1] :]
        # an end token that the first row reaches at its third token and some other row never reaches
        eos = int(free[0, 2])
        assert any(eos not in row.tolist() for row in free[1:])
        expected = model.generate(**batch, eos_token_id=eos, **settings)[:, batch["input_ids"].shape[1] :]
        new_tokens = decode(model, batch, 10, eos, token_picker(GenerateArgs(model=tiny_model, data=None, out=None)))
    assert new_tokens[0] == free[0, : free[0].tolist().index(eos) + 1].tolist()  # it stopped at its end
    assert max(len(tokens) for tokens in new_tokens) == 10
    for tokens, row in zip(new_tokens, expected.tolist(), strict=True):
        assert tokens == row[: len(tokens)] and all(t == smol_tokenizer.pad_token_id for t in row[len(tokens) :])


@dataclass
class OutputWithPastKeyValues(ModelOutput):
    logits: torch.Tensor | None = None
    past_key_values: Cache | None = None


class PastKeyValuesModel(torch.nn.Module):
    """A causal LM as transformers before 5.20 calls it (vLLM's extra holds those): its KV cache is
    `past_key_values`, in the forward's arguments and in its output."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, position_ids, use_cache, past_key_values=None):
        output = self.model(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=use_cache,
            cache=past_key_values,
        )
        return OutputWithPastKeyValues(logits=output.logits, past_key_values=output.cache)


def test_decoding_passes_the_cache_under_the_models_own_name(tiny_model, smol_tokenizer):
    model = load_model(tiny_model, torch.float32, False, torch.device("cpu")).eval()
    batch = left_padded_prompts(smol_tokenizer)
    greedy = token_picker(GenerateArgs(model=tiny_model, data=None, out=None))
    with torch.inference_mode():
        expected = decode(model, batch, 8, -1, greedy)
        assert decode(PastKeyValuesModel(model), batch, 8, -1, greedy) == expected


def test_sampling_is_seeded_and_a_tiny_top_p_is_greedy(tiny_model, smol_tokenizer):
    model = load_model(tiny_model, torch.float32, False, torch.device("cpu")).eval()
    batch = left_padded_prompts(smol_tokenizer)

    def sampled(**settings):
        pick = token_picker(GenerateArgs(model=tiny_model, data=None, out=None, **settings))
        with torch.inference_mode():
            return decode(model, batch, 8, -1, pick)

    assert sampled(temperature=1.0, seed=3) == sampled(temperature=1.0, seed=3)
    assert sampled(temperature=1.0, seed=3) != sampled(temperature=1.0, seed=4)
    assert sampled(temperature=1.0, top_p=1e-9) == sampled(temperature=0.0)  # only the top token is left
    assert sampled(temperature=1.0, top_k=1, seed=5) == sampled(temperature=0.0)  # top-k too
    assert sampled(temperature=1.0, top_k=50, seed=3) != sampled(temperature=1.0, seed=3)  # the cut changes draws
