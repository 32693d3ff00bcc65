import json

import pytest
import torch
from safetensors.torch import load_file

from lota.errors import UserError
from lota.export import export
from lota.extract_mask import save_mask
from lota.io import TensorReader, checkpoint_files
from lota.prepare_data import prepare_split
from lota.sparse_delta import is_sparse_delta
from lota.train import (
    IGNORE_INDEX,
    MaskedOptimizer,
    TrainArgs,
    clip_gradients,
    micro_batches,
    tokenize_example,
    train,
)
from tests.conftest import write_records


@pytest.mark.parametrize("kind", ["adamw", "rmsprop"])
def test_masked_optimizer_never_writes_frozen_entries(kind):
    torch.manual_seed(0)
    parameter = torch.nn.Parameter(torch.randn(6, 5))
    before = parameter.detach().clone()
    indices = torch.tensor([0, 7, 12, 29])
    optimizer = MaskedOptimizer([(parameter, indices)], kind, lr=1e-2, weight_decay=0.1)
    for _ in range(5):
        (parameter * torch.randn(6, 5)).sum().backward()
        optimizer.gather_gradients()
        optimizer.step()
        optimizer.zero_grad()
    frozen = torch.ones(30, dtype=torch.bool)
    frozen[indices] = False
    flat_now, flat_before = parameter.detach().view(-1), before.view(-1)
    assert torch.equal(flat_now[frozen], flat_before[frozen])
    assert (flat_now[indices] != flat_before[indices]).all()
    assert optimizer.trainable_count == 4
    state = optimizer.optimizer.state[optimizer.slots[0][2]]
    assert all(t.numel() in (1, 4) for t in state.values() if torch.is_tensor(t))


def test_masked_optimizer_matches_dense_optimizer_on_trainable_entries():
    torch.manual_seed(1)
    dense = torch.nn.Parameter(torch.randn(4, 4))
    masked = torch.nn.Parameter(dense.detach().clone())
    indices = torch.tensor([1, 5, 6])
    reference = torch.optim.AdamW([dense], lr=1e-2, weight_decay=0.0)
    optimizer = MaskedOptimizer([(masked, indices)], "adamw", lr=1e-2, weight_decay=0.0)
    weights = torch.randn(4, 4)
    keep = torch.zeros(16)
    keep[indices] = 1
    for _ in range(3):
        (dense * weights).sum().backward()
        dense.grad.mul_(keep.view(4, 4))
        reference.step()
        reference.zero_grad()
        (masked * weights).sum().backward()
        optimizer.gather_gradients()
        optimizer.step()
        optimizer.zero_grad()
    assert torch.allclose(masked.detach().view(-1)[indices], dense.detach().view(-1)[indices])


def test_clip_gradients_per_tensor_and_global():
    grads = [torch.tensor([3.0, 4.0]), torch.tensor([0.3, 0.4])]
    norm = clip_gradients(grads, "per_tensor", 1.0)
    assert norm == pytest.approx((25 + 0.25) ** 0.5)
    assert grads[0].norm() == pytest.approx(1.0, rel=1e-5)
    assert torch.allclose(grads[1], torch.tensor([0.3, 0.4]))
    grads = [torch.tensor([3.0, 4.0]), torch.tensor([0.0, 0.0])]
    clip_gradients(grads, "global", 1.0)
    assert torch.stack([g.norm() for g in grads]).norm() == pytest.approx(1.0, rel=1e-5)
    untouched = [torch.tensor([3.0, 4.0])]
    clip_gradients(untouched, "none", 1.0)
    assert untouched[0].tolist() == [3.0, 4.0]


def test_micro_batches_are_seeded_and_cover_fractional_epochs():
    first = list(micro_batches(10, 4, 1.5, seed=3))
    assert first == list(micro_batches(10, 4, 1.5, seed=3))
    assert first != list(micro_batches(10, 4, 1.5, seed=4))
    served = [i for _, chunk in first for i in chunk]
    assert len(served) == 15 and sorted(served[:10]) == list(range(10))
    assert first[-1][0] == pytest.approx(1.5)


def test_tokenize_example_masks_the_prompt_and_truncates(smol_tokenizer):
    input_ids, labels = tokenize_example("Q: 1+1?", " 2<|im_end|>", smol_tokenizer, max_length=256)
    prompt_length = len(smol_tokenizer("Q: 1+1?", add_special_tokens=False).input_ids)
    assert labels[:prompt_length] == [IGNORE_INDEX] * prompt_length
    assert labels[prompt_length:] == input_ids[prompt_length:]
    assert input_ids[-1] == smol_tokenizer.eos_token_id
    short_ids, short_labels = tokenize_example("Q: 1+1?", " 2<|im_end|>", smol_tokenizer, max_length=3)
    assert len(short_ids) == len(short_labels) == 3


@pytest.fixture(scope="module")
def train_records(tmp_path_factory, gsm8k_dir, smol_tokenizer):
    records = prepare_split("gsm8k", "train", gsm8k_dir, smol_tokenizer, size=8, seed=0)
    return write_records(tmp_path_factory.mktemp("records") / "train.jsonl", records)


def random_mask(model_dir, sparsity, path):
    """A mask over the projection weights of a model, chosen by seeded random scores."""
    generator = torch.Generator().manual_seed(0)
    with TensorReader(checkpoint_files(model_dir)) as reader:
        shapes = {n: reader.get(n).shape for n in reader.names() if n.endswith("proj.weight")}
    masks = {n: torch.rand(shape, generator=generator) >= sparsity for n, shape in shapes.items()}
    save_mask(path, masks, {"sparsity": sparsity})
    return masks


@pytest.mark.parametrize("optimizer", ["adamw", "rmsprop"])
def test_lota_training_keeps_frozen_entries_bit_identical(tmp_path, tiny_model, train_records, optimizer):
    masks = random_mask(tiny_model, 0.9, tmp_path / "mask.safetensors")
    args = TrainArgs(
        model=tiny_model,
        data=train_records,
        out=tmp_path / "run",
        method="lota",
        mask=tmp_path / "mask.safetensors",
        optimizer=optimizer,
        lr=1e-2,
        weight_decay=0.1,
        batch_size=4,
        max_length=256,
        epochs=2,
        clip="global",
    )
    summary, model = train(args)
    assert summary["trainable_params"] == sum(int(m.sum()) for m in masks.values())
    export(tiny_model, tmp_path / "run" / "weights.safetensors", tmp_path / "exported")
    base = load_file(str(tiny_model / "model.safetensors"))
    in_memory = {name: p.detach() for name, p in model.named_parameters()}
    exported = load_file(str(tmp_path / "exported" / "model.safetensors"))
    # The trained model itself, and its export rebuilt from the sparse delta.
    for tuned in (in_memory, exported):
        assert set(base) == set(tuned)
        changed_trainable = 0
        for name, original in base.items():
            if name in masks:
                mask = masks[name]
                assert torch.equal(tuned[name][~mask], original[~mask]), name
                changed_trainable += int((tuned[name][mask] != original[mask]).sum())
            else:
                assert torch.equal(tuned[name], original), f"{name} is outside the mask scope and must not move"
        assert changed_trainable > 0.9 * summary["trainable_params"]
    with TensorReader([tmp_path / "run" / "weights.safetensors"]) as reader:
        assert is_sparse_delta(reader)
    log_lines = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len(log_lines) == summary["steps"] == 4
    assert {"loss", "lr", "tokens_per_s", "peak_memory_mb", "grad_norm"} <= set(log_lines[0])


def test_fft_training_lowers_the_loss(tmp_path, tiny_model, train_records):
    args = TrainArgs(
        model=tiny_model,
        data=train_records,
        out=tmp_path / "run",
        method="fft",
        lr=3e-3,
        batch_size=8,
        max_length=256,
        epochs=8,
        precision="fp32",
    )
    summary, _ = train(args)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0] - 0.5
    weights = load_file(str(tmp_path / "run" / "weights.safetensors"))
    assert summary["trainable_params"] == sum(t.numel() for t in weights.values()) == summary["total_params"]


def test_training_is_reproducible(tmp_path, tiny_model, train_records):
    def weights(out):
        train(
            TrainArgs(model=tiny_model, data=train_records, out=out, lr=1e-3, batch_size=4, max_length=256, max_steps=2)
        )
        return load_file(str(out / "weights.safetensors"))

    first, second = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_lota_without_mask_or_with_foreign_mask_fails(tmp_path, tiny_model, train_records):
    with pytest.raises(UserError, match="method lota needs --mask"):
        train(TrainArgs(model=tiny_model, data=train_records, out=tmp_path / "run", method="lota"))
    save_mask(
        tmp_path / "foreign.safetensors", {"model.layers.0.mlp.up_proj.weight": torch.ones(3, 3, dtype=torch.bool)}, {}
    )
    with pytest.raises(UserError, match="up_proj.weight has shape \\(3, 3\\)"):
        train(
            TrainArgs(
                model=tiny_model,
                data=train_records,
                out=tmp_path / "run",
                method="lota",
                mask=tmp_path / "foreign.safetensors",
            )
        )
    assert not (tmp_path / "run").exists()


def test_gradient_accumulation_matches_one_large_batch(tmp_path, tiny_model, train_records):
    def weights(out, batch_size, grad_accum):
        train(
            TrainArgs(
                model=tiny_model,
                data=train_records,
                out=out,
                lr=1e-3,
                batch_size=batch_size,
                grad_accum=grad_accum,
                max_length=256,
                max_steps=2,
                precision="fp32",
                clip="none",
            )
        )
        steps = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
        return load_file(str(out / "weights.safetensors")), steps

    (large, large_steps), (accumulated, accumulated_steps) = (
        weights(tmp_path / "large", 4, 1),
        weights(tmp_path / "accumulated", 2, 2),
    )
    for one, other in zip(
        large_steps, accumulated_steps, strict=True
    ):  # the gradient itself, not only Adam's scale-free update
        assert one["grad_norm"] == pytest.approx(other["grad_norm"], rel=1e-4)
        assert one["loss"] == pytest.approx(other["loss"], rel=1e-5)
    for name in large:
        assert torch.allclose(large[name], accumulated[name], atol=1e-6), name


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"epochs": 0.0, "max_steps": 5}, "epochs must be a positive number, got 0.0"),
        ({"lr": float("nan")}, r"lr must be in \[0.0, 1.0\], got nan"),
        ({"max_steps": -1}, "max_steps must be >= 0, got -1"),
        ({"warmup_steps": -2}, "warmup_steps must be >= 0, got -2"),
        ({"max_grad_norm": -1.0}, "max_grad_norm must be in"),
        ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
    ],
)
def test_bad_training_arguments_are_named(tmp_path, train_records, change, message):
    args = TrainArgs(model=tmp_path, data=train_records, out=tmp_path / "run", **change)
    with pytest.raises(UserError, match=message):
        train(args)
    assert not (tmp_path / "run").exists()
