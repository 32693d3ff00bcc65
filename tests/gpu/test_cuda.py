"""The engine's guarantees on a CUDA device: frozen entries stay bit-identical under AdamW and
RMSprop with bf16 weights, updates inside the backward pass equal those after it, a killed run
resumes bit-identically (the CUDA random generator included), and the transformers generation
backend gives what a plain `model.generate` gives.

Everything is tiny (a random two-layer Llama, a word-level tokenizer built here, ten records), so
that the whole file runs in seconds and needs no data, network, GGUF package or shared fixture.
tests/gpu/run.sh runs it on a GPU machine (`pytest -m gpu`); without CUDA every test is skipped,
unless LOTA_GPU_TESTS_ON_CPU=1, which runs the same checks on the CPU to prove their logic there.
"""

import json
import os
from dataclasses import replace

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from lota.core.io import TensorReader
from lota.core.modeling import inference_dtype
from lota.evaluation.generation import GenerateArgs, generate
from lota.training.args import TrainArgs
from lota.training.loop import train
from lota.training.optim import ParameterUpdater, make_slots
from tests.conftest import build_tiny_llama, write_records
from tests.test_checkpoint import Stopped, assert_same_run, stop_after_checkpoint
from tests.test_train import random_mask

pytestmark = pytest.mark.gpu

SPECIAL = ["<pad>", "<eos>", "<unk>"]
WORDS = [*SPECIAL, *map(str, range(20)), "add", "and", ":"]


@pytest.fixture(scope="module", autouse=True)
def on() -> torch.device:
    """The device the checks run on; autouse, so that without one every test is skipped before any work."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if os.environ.get("LOTA_GPU_TESTS_ON_CPU") == "1":
        return torch.device("cpu")
    pytest.skip("no CUDA device")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """A random two-layer Llama with a word-level tokenizer over WORDS, saved as an HF model directory.

    The output layer is not tied to the embedding: a tied one this small just repeats the last
    token, and generations that differ from prompt to prompt make a sharper comparison.
    """
    word_level = Tokenizer(models.WordLevel({word: i for i, word in enumerate(WORDS)}, unk_token="<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    word_level.add_special_tokens(SPECIAL)  # matched in the text before splitting, and skipped when decoding
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=word_level, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "model", tokenizer, tie_word_embeddings=False)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    sums = [{"prompt": f"add {a} and {3 * a % 10} :", "response": f" {a + 3 * a % 10} <eos>"} for a in range(10)]
    return write_records(tmp_path_factory.mktemp("records") / "train.jsonl", sums)


@pytest.fixture(scope="module")
def mask(tmp_path_factory, tiny_llama):
    path = tmp_path_factory.mktemp("mask") / "mask.safetensors"
    random_mask(tiny_llama, 0.9, path)
    return path


def train_two_layers(on, kind, in_backward, steps=4):
    """Train 10% of the entries of two bf16 weight matrices for a few steps through lota.training.optim.

    Two layers, so that in the backward pass the second is updated while the first's gradient is
    still to be computed. Returns the fp32 starting values, the parameters and their slots.
    """
    generator = torch.Generator().manual_seed(0)
    exact = {"up": torch.randn(48, 32, generator=generator), "down": torch.randn(16, 48, generator=generator)}
    parameters = {name: torch.nn.Parameter(values.to(on, torch.bfloat16)) for name, values in exact.items()}
    trainable = {
        name: torch.randperm(values.numel(), generator=generator)[: values.numel() // 10]
        for name, values in exact.items()
    }
    chosen = [(name, parameters[name], trainable[name]) for name in parameters]
    slots = make_slots(chosen, kind, lr=1e-2, weight_decay=0.1, fp32_values=exact.__getitem__)
    updater = ParameterUpdater(slots, "per_tensor", 1.0, in_backward=in_backward)
    for batch in torch.randn(steps, 8, 32, generator=generator).to(on, torch.bfloat16):
        hidden = torch.relu(batch @ parameters["up"].T)
        (hidden @ parameters["down"].T).float().square().mean().backward()
        updater.step()
    return exact, parameters, slots


@pytest.mark.parametrize("in_backward", [True, False], ids=["in-backward", "after-backward"])
@pytest.mark.parametrize("kind", ["adamw", "rmsprop"])
def test_frozen_bf16_entries_are_bit_identical_and_state_is_sparse(on, kind, in_backward):
    exact, _, slots = train_two_layers(on, kind, in_backward)
    for slot in slots:
        start = exact[slot.name].to(on, torch.bfloat16).view(-1)
        now = slot.parameter.detach().view(-1)
        assert slot.parameter.grad is None
        assert slot.indices.dtype == torch.int32 and slot.indices.device.type == on.type
        frozen = torch.ones_like(now, dtype=torch.bool)
        frozen[slot.indices] = False
        assert torch.equal(now[frozen], start[frozen]), slot.name
        # The fp32 master holds only the trainable entries, has moved off their exact starting
        # values, and is what the bf16 parameter holds there.
        assert slot.master.dtype == torch.float32 and slot.master.device.type == on.type
        assert slot.master.numel() == slot.indices.numel() == exact[slot.name].numel() // 10
        assert (slot.master != exact[slot.name].view(-1)[slot.indices.cpu()].to(on)).all(), slot.name
        assert torch.equal(now[slot.indices], slot.master.to(torch.bfloat16)), slot.name
        state = slot.optimizer.state[slot.master]
        assert {value.numel() for value in state.values()} <= {1, slot.master.numel()}
        assert all(value.device.type == on.type for value in state.values() if value.numel() > 1)


@pytest.mark.parametrize("kind", ["adamw", "rmsprop"])
def test_updates_in_the_backward_pass_equal_updates_after_it(on, kind):
    _, in_backward, _ = train_two_layers(on, kind, in_backward=True)
    _, after_backward, _ = train_two_layers(on, kind, in_backward=False)
    for name, parameter in in_backward.items():
        assert torch.equal(parameter, after_backward[name]), name


def step_losses(run_dir):
    return [json.loads(line)["loss"] for line in (run_dir / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("optimizer", ["adamw", "rmsprop"])
def test_lota_in_backward_training_writes_the_weights_of_after_backward_training(
    tmp_path, on, tiny_llama, records, mask, optimizer
):
    args = TrainArgs(
        model=tiny_llama,
        data=records,
        out=tmp_path / "in-backward",
        method="lota",
        mask=mask,
        weights="bf16",
        optimizer=optimizer,
        lr=1e-2,
        weight_decay=0.1,
        max_grad_norm=0.01,  # small, so that clipping acts: in the hook, or after the backward pass
        batch_size=4,
        epochs=2,
    )
    summary, _ = train(args)
    after, _ = train(replace(args, out=tmp_path / "after-backward", optimizer_in_backward=False))
    assert summary["device"].startswith(on.type)
    assert summary["updates_in_backward"] and not after["updates_in_backward"]
    assert step_losses(args.out) == step_losses(tmp_path / "after-backward")  # every step, not only the last
    weights = (args.out / "weights.safetensors").read_bytes()
    assert weights == (tmp_path / "after-backward" / "weights.safetensors").read_bytes()


@pytest.mark.parametrize(
    "settings",
    [
        {"method": "lora", "lora_dropout": 0.1},  # dropout draws from the device's generator, which must resume
        {"method": "lota", "weights": "bf16"},
    ],
    ids=["lora-dropout", "lota-bf16-weights"],
)
def test_a_resumed_run_ends_bit_identical(tmp_path, monkeypatch, on, tiny_llama, records, mask, settings):
    base = TrainArgs(model=tiny_llama, data=records, out=tmp_path / "whole", lr=1e-3, batch_size=2, epochs=2)
    base = replace(base, mask=mask if settings["method"] == "lota" else None, **settings)
    summary, _ = train(base)
    assert summary["device"].startswith(on.type)
    interrupted = replace(base, out=tmp_path / "interrupted", checkpoint_every=2)
    with monkeypatch.context() as patch:
        stop_after_checkpoint(patch, step=4)
        with pytest.raises(Stopped):
            train(interrupted)
    with TensorReader([tmp_path / "interrupted.checkpoint" / "step-4" / "rank-0.safetensors"]) as saved:
        assert ("rng/cuda" in saved.names()) == (on.type == "cuda")

    summary, _ = train(interrupted)
    assert summary["resumed_from_step"] == 4 and summary["steps"] == 10
    assert_same_run(interrupted.out, base.out)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_transformers_generation_equals_plain_generate(tmp_path, on, tiny_llama, batch_size):
    # Prompts in order of length, which is the order the backend batches them in.
    prompts = ["1", "add 2", "add 3 and", "add 4 and 5", "add 6 and 7 :", "add 10 and 12 :"]
    data = write_records(tmp_path / "eval.jsonl", [{"id": i, "prompt": p, "gold": ""} for i, p in enumerate(prompts)])
    args = GenerateArgs(
        model=tiny_llama,
        data=data,
        out=tmp_path / "samples.jsonl",
        backend="transformers",
        batch_size=batch_size,
        max_new_tokens=6,
    )
    samples = generate(args)
    assert {sample["backend"] for sample in samples} == {"transformers"}

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=inference_dtype(on)).to(on).eval()
    expected = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        batch = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(on)
        with torch.inference_mode():
            output = model.generate(
                **batch,
                max_new_tokens=args.max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        expected += tokenizer.batch_decode(output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    assert any(expected), "the model generated nothing but special tokens: the comparison would be empty"
    assert [sample["completion"] for sample in samples] == expected
