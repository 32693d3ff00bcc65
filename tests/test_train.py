import json
import math

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from lota.core.errors import UserError
from lota.core.io import TensorReader, checkpoint_files, read_jsonl
from lota.core.modeling import load_model, load_tokenizer
from lota.deltas.masks import load_mask, save_mask
from lota.deltas.sparse import is_sparse_delta, read_sparse_delta
from lota.export import export
from lota.training.args import TrainArgs, validate
from lota.training.data import (
    IGNORE_INDEX,
    collate,
    micro_batches,
    optimizer_steps,
    tokenize_example,
    tokenize_records,
)
from lota.training.loop import train, train_step
from lota.training.losses import response_loss
from lota.training.trainable import make_updater
from tests.conftest import write_records


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


def random_mask(model_dir, sparsity, path):
    """A mask over the projection weights of a model, chosen by seeded random scores."""
    generator = torch.Generator().manual_seed(0)
    with TensorReader(checkpoint_files(model_dir)) as reader:
        shapes = {n: reader.get(n).shape for n in reader.names() if n.endswith("proj.weight")}
    masks = {n: torch.rand(shape, generator=generator) >= sparsity for n, shape in shapes.items()}
    save_mask(path, masks, {"sparsity": sparsity})
    return masks


@pytest.mark.parametrize(
    ("optimizer", "engine"),
    [
        ("adamw", {"clip": "global"}),
        ("rmsprop", {}),
        ("adamw", {"weights": "bf16", "activation_checkpointing": True}),
    ],
)
def test_lota_training_keeps_frozen_entries_bit_identical(tmp_path, tiny_model, train_records, optimizer, engine):
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
        **engine,
    )
    summary, model = train(args)
    assert summary["trainable_params"] == sum(int(m.sum()) for m in masks.values())
    export(tiny_model, [tmp_path / "run" / "weights.safetensors"], tmp_path / "exported")
    base = load_file(str(tiny_model / "model.safetensors"))
    in_memory = {name: p.detach() for name, p in model.named_parameters()}
    if engine.get("weights") == "bf16":  # trained in bf16: the base to keep is the rounded one
        base_in_memory = {name: t.to(torch.bfloat16) for name, t in base.items()}
    else:
        base_in_memory = base
    exported = load_file(str(tmp_path / "exported" / "model.safetensors"))
    # The trained model itself, and its export rebuilt from the sparse delta.
    for tuned, reference in ((in_memory, base_in_memory), (exported, base)):
        assert set(reference) == set(tuned)
        changed_trainable = 0
        for name, original in reference.items():
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
                group_by_length=False,  # the same examples in each step, however they are split
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
        ({"epochs": 0.0, "max_steps": 5}, "epochs must be > 0, got 0.0"),
        ({"lr": float("nan")}, r"lr must be in \[0.0, 1.0\], got nan"),
        ({"max_steps": -1}, "max_steps must be >= 0, got -1"),
        ({"warmup_steps": -2}, "warmup_steps must be >= 0, got -2"),
        ({"max_grad_norm": -1.0}, "max_grad_norm must be >= 1e-12, got -1.0"),
        ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
    ],
)
def test_bad_training_arguments_are_named(tmp_path, train_records, change, message):
    args = TrainArgs(model=tmp_path, data=train_records, out=tmp_path / "run", **change)
    with pytest.raises(UserError, match=message):
        train(args)
    assert not (tmp_path / "run").exists()


def reference_training(args, masks=None):
    """The plain loop the engine must match: one dense torch optimizer over the trained
    parameters, optimizer.step() after the backward pass, full logits; with masks, gradients
    are masked and the frozen entries put back after every step."""
    torch.manual_seed(args.seed)
    tokenizer = load_tokenizer(args.model)
    examples = tokenize_records(read_jsonl(args.data), tokenizer, args.max_length, args.data)
    model = load_model(args.model)
    model.config.use_cache = False
    model.train()
    base = {name: p.detach().clone() for name, p in model.named_parameters()}
    trained = {name: p for name, p in model.named_parameters() if masks is None or name in masks}
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in trained)
    optimizer = torch.optim.AdamW(trained.values(), lr=args.lr, weight_decay=args.weight_decay)
    for (_, chunk), *_ in optimizer_steps([len(ids) for ids, _ in examples], args):
        batch = collate([examples[i] for i in chunk], tokenizer.pad_token_id)
        targets = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        (response_loss(model, batch, trim_logits=False) / targets).backward()
        for name, parameter in trained.items():
            if masks is not None:
                parameter.grad.mul_(masks[name])
            torch.nn.utils.clip_grad_norm_([parameter], args.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad()
        if masks is not None:
            with torch.no_grad():
                for name, parameter in trained.items():
                    parameter.copy_(torch.where(masks[name], parameter, base[name]))
    return {name: p.detach() for name, p in model.named_parameters()}


def assert_same_weights(model, expected, atol):
    for name, parameter in model.named_parameters():
        assert torch.allclose(parameter.detach(), expected[name], rtol=0, atol=atol), name


def three_steps(model, records, out, **settings):
    """Arguments of a three-step run on the tiny model."""
    return TrainArgs(model=model, data=records, out=out, batch_size=4, max_length=256, max_steps=3, **settings)


@pytest.mark.parametrize(
    "engine",
    [
        {"optimizer_in_backward": True},
        {"optimizer_in_backward": False},
        {"activation_checkpointing": True},
        {"compile": True, "attention": "eager"},
    ],
)
def test_fft_engine_matches_a_standard_optimizer_loop(tmp_path, tiny_model, train_records, engine):
    args = three_steps(
        tiny_model, train_records, tmp_path / "run", lr=1e-3, weight_decay=0.01, precision="fp32", **engine
    )
    summary, model = train(args)
    assert summary["updates_in_backward"] is engine.get("optimizer_in_backward", True)
    # Inductor's fused kernels sum in another order than eager ones: up to 3e-6 apart after three
    # steps here, three orders below a wrong update's size (the lr, 1e-3).
    assert_same_weights(model, reference_training(args), atol=1e-5 if engine.get("compile") else 1e-6)


def test_lota_sparse_state_matches_the_masked_dense_update(tmp_path, tiny_model, train_records):
    masks = random_mask(tiny_model, 0.7, tmp_path / "mask.safetensors")
    args = three_steps(
        tiny_model,
        train_records,
        tmp_path / "run",
        method="lota",
        mask=tmp_path / "mask.safetensors",
        lr=1e-3,
        weight_decay=0.1,
        precision="fp32",
    )
    summary, model = train(args)
    dense_state = 2 * 4 * sum(m.numel() for m in masks.values())
    assert summary["optimizer_state_bytes"] < 0.35 * dense_state  # moments of the 30% trainable entries
    assert_same_weights(model, reference_training(args, masks), atol=1e-6)


def test_lora_trains_adapters_only_and_exports_merged(tmp_path, tiny_model, train_records):
    args = three_steps(
        tiny_model,
        train_records,
        tmp_path / "run",
        method="lora",
        lr=1e-2,
        lora_rank=2,
        lora_alpha=4.0,
        lora_targets=["q_proj", "down_proj"],
    )
    summary, model = train(args)
    base = load_file(str(tiny_model / "model.safetensors"))
    # rank 2 on q_proj (16 -> 16) and down_proj (32 -> 16) of two layers: A and B each
    assert summary["trainable_params"] == 2 * (2 * (16 + 16) + 2 * (32 + 16))
    assert summary["total_params"] == sum(t.numel() for name, t in base.items() if name != "lm_head.weight")
    adapter = load_file(str(tmp_path / "run" / "weights.safetensors"))
    assert sum(t.numel() for t in adapter.values()) == summary["trainable_params"]
    merged_in_memory = {name: p.detach().clone() for name, p in model.merge_and_unload().named_parameters()}
    export(tiny_model, [tmp_path / "run" / "weights.safetensors"], tmp_path / "exported")
    exported = load_file(str(tmp_path / "exported" / "model.safetensors"))
    for name, original in base.items():
        if name == "lm_head.weight":
            continue
        adapted = "q_proj" in name or "down_proj" in name
        assert torch.equal(exported[name], original) is not adapted, name
        assert torch.allclose(exported[name], merged_in_memory[name], atol=1e-7), name


@pytest.mark.parametrize("warmup", [0, 2], ids=["given-mask", "mask-after-warmup"])
def test_rosa_trains_adapters_and_masked_entries_and_exports_both(tmp_path, tiny_model, train_records, warmup):
    """RoSA: frozen base entries stay the base's; the export is base + sparse delta + merged adapter."""
    given = random_mask(tiny_model, 0.9, tmp_path / "mask.safetensors")
    where = {"mask": tmp_path / "mask.safetensors"}
    if warmup:
        where = {"mask_warmup_steps": warmup, "mask_sparsity": 0.9, "mask_batches": 2}
    args = TrainArgs(
        model=tiny_model,
        data=train_records,
        out=tmp_path / "run",
        method="rosa",
        lr=1e-2,
        batch_size=2,
        max_length=256,
        lora_rank=4,
        precision="fp32",
        **where,
    )
    summary, _ = train(args)
    run = tmp_path / "run"
    masks = given
    if warmup:
        with TensorReader([run / "mask.safetensors"]) as reader:
            assert json.loads(reader.metadata["after_step"]) == warmup
        masks = load_mask(run / "mask.safetensors", {name: mask.shape for name, mask in given.items()})
        assert sum(int(m.sum()) for m in masks.values()) == round(0.1 * sum(m.numel() for m in masks.values()))
    adapter = load_file(str(run / "adapter.safetensors"))
    assert summary["trainable_params"] == sum(int(m.sum()) for m in masks.values()) + sum(
        t.numel() for t in adapter.values()
    )
    with TensorReader([run / "weights.safetensors"]) as reader:
        assert is_sparse_delta(reader)
        delta, _ = read_sparse_delta(reader)
    base = load_file(str(tiny_model / "model.safetensors"))
    sparse = {name: tensor.clone() for name, tensor in base.items()}
    for name, (indices, values) in delta.items():
        assert masks[name].flatten()[indices].all(), f"{name}: an entry outside the mask moved"
        sparse[name].view(-1)[indices] += values
    assert any(values.abs().sum() > 0 for _, values in delta.values())
    export(tiny_model, [run / "weights.safetensors", run / "adapter.safetensors"], tmp_path / "exported")
    exported = load_file(str(tmp_path / "exported" / "model.safetensors"))
    scale = args.lora_alpha / args.lora_rank
    adapted = 0
    for name, tensor in sparse.items():
        module = name.removesuffix(".weight")
        down = f"base_model.model.{module}.lora_A.weight"
        if down in adapter:
            tensor = tensor + scale * adapter[f"base_model.model.{module}.lora_B.weight"] @ adapter[down]
            adapted += 1
        torch.testing.assert_close(exported[name], tensor, rtol=0, atol=1e-6, msg=name)
    assert adapted > 0


def write_preference_records(records_path, out):
    """Pairs whose chosen response is the reference one and whose rejected one is another record's."""
    records = read_jsonl(records_path, "records")
    pairs = [
        {"prompt": record["prompt"], "chosen": record["response"], "rejected": other["response"]}
        for record, other in zip(records, records[1:] + records[:1], strict=True)
    ]
    return write_records(out, pairs)


@pytest.fixture(scope="module")
def preference_records(tmp_path_factory, train_records):
    return write_preference_records(train_records, tmp_path_factory.mktemp("preferences") / "pairs.jsonl")


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({"method": "lota"}, id="lota"),
        pytest.param({"method": "lora"}, id="lora", marks=pytest.mark.slow),
        pytest.param({"method": "fft", "reference_free": True}, id="fft-reference-free", marks=pytest.mark.slow),
    ],
)
def test_dpo_widens_the_reward_margin_with_every_method(tmp_path, tiny_model, preference_records, settings):
    masks = random_mask(tiny_model, 0.9, tmp_path / "mask.safetensors")
    args = TrainArgs(
        model=tiny_model,
        data=preference_records,
        out=tmp_path / "run",
        mask=tmp_path / "mask.safetensors" if settings["method"] == "lota" else None,
        loss="dpo",
        beta=0.5,
        lr={"lota": 1e-2, "lora": 1e-3, "fft": 1e-4}[settings["method"]],
        batch_size=4,
        max_length=256,
        epochs=4,
        precision="fp32",
        **settings,
    )
    summary, model = train(args)
    steps = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len(steps) == summary["steps"] == 8
    if not args.reference_free:  # the first step's policy is the reference: every margin is 0
        assert steps[0]["loss"] == pytest.approx(math.log(2), abs=1e-5) and steps[0]["reward_margin"] == 0
    # Over the last epoch (its two steps cover every pair) the chosen responses gained on the rejected ones.
    first_epoch, last_epoch = steps[:2], steps[-2:]
    assert sum(step["reward_margin"] for step in last_epoch) > sum(step["reward_margin"] for step in first_epoch)
    assert sum(step["loss"] for step in last_epoch) < sum(step["loss"] for step in first_epoch)
    if not args.reference_free:
        assert sum(step["loss"] for step in last_epoch) / 2 < math.log(2), last_epoch
    if settings["method"] == "lota":
        base = load_file(str(tiny_model / "model.safetensors"))
        for name, parameter in model.named_parameters():
            frozen = ~masks[name] if name in masks else torch.ones_like(parameter, dtype=torch.bool)
            assert torch.equal(parameter.detach()[frozen], base[name][frozen]), name


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_dpo_starts_at_log_2_under_bf16(tmp_path, tiny_model, preference_records, grad_accum):
    """The reference log-probs come from the micro-batches training runs, so bf16's shape-dependent
    rounding cancels: at the first step the policy is exactly its reference."""
    random_mask(tiny_model, 0.9, tmp_path / "mask.safetensors")
    args = TrainArgs(
        model=tiny_model,
        data=preference_records,
        out=tmp_path / "run",
        mask=tmp_path / "mask.safetensors",
        method="lota",
        loss="dpo",
        batch_size=3,
        grad_accum=grad_accum,
        max_steps=1,
        precision="bf16",
    )
    train(args)
    (first,) = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert first["reward_margin"] == 0 and first["reward_accuracy"] == 0


def test_dpo_refuses_records_without_pairs(tmp_path, tiny_model, train_records):
    args = TrainArgs(model=tiny_model, data=train_records, out=tmp_path / "run", loss="dpo")
    with pytest.raises(UserError, match="record 1 needs string fields 'prompt', 'chosen' and 'rejected'"):
        train(args)
    assert not (tmp_path / "run").exists()


def test_length_grouped_micro_batches_pad_little_and_cover_every_example_each_epoch():
    lengths = [40 + (i * 7919) % 361 for i in range(320)]  # 40 to 400 tokens, in a scrambled order
    grouped = list(micro_batches(320, 8, 2.0, seed=1, lengths=lengths))
    assert grouped == list(micro_batches(320, 8, 2.0, seed=1, lengths=lengths))
    for epoch in (grouped[:40], grouped[40:]):
        assert sorted(i for _, chunk in epoch for i in chunk) == list(range(320))
    assert grouped[39][0] == 1.0 and grouped[-1][0] == 2.0

    def padding(batches):
        positions = sum(len(chunk) * max(lengths[i] for i in chunk) for _, chunk in batches)
        return 1 - sum(lengths[i] for _, chunk in batches for i in chunk) / positions

    assert padding(grouped) < 0.05 < padding(micro_batches(320, 8, 2.0, seed=1))
    assert [chunk for _, chunk in grouped[:40]] != [chunk for _, chunk in grouped[40:]]  # each epoch reshuffled


def test_a_padded_batch_has_the_loss_and_gradients_of_its_sequences_alone(tiny_model, smol_tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_model, torch_dtype=torch.float32)
    short = tokenize_example("Q: 1+1?", " 2<|im_end|>", smol_tokenizer, max_length=256)
    long = tokenize_example("Q: what is three plus four, in words?", " seven, of course<|im_end|>", smol_tokenizer, 256)

    def loss_and_gradients(batches):
        model.zero_grad()
        loss = sum(response_loss(model, collate(batch, smol_tokenizer.pad_token_id), True) for batch in batches)
        loss.backward()
        return loss.detach(), {name: parameter.grad.clone() for name, parameter in model.named_parameters()}

    padded, padded_gradients = loss_and_gradients([[short, long]])
    alone, alone_gradients = loss_and_gradients([[short], [long]])
    assert padded.item() == pytest.approx(alone.item(), rel=1e-5)
    for name, gradient in alone_gradients.items():
        assert torch.allclose(padded_gradients[name], gradient, atol=1e-6, rtol=1e-4), name


def test_official_truncation_keeps_the_prompt_start_then_the_response_start(smol_tokenizer):
    prompt, response = "one two three four five six seven eight", " alpha beta gamma delta epsilon zeta"
    prompt_ids = smol_tokenizer(prompt, add_special_tokens=False).input_ids
    response_ids = smol_tokenizer(response, add_special_tokens=False).input_ids
    assert len(prompt_ids) == 8 and len(response_ids) == 7
    # Over max_length 12: the prompt keeps its first 4 tokens; 4 + 7 fits, so the response is whole.
    ids, labels = tokenize_example(prompt, response, smol_tokenizer, max_length=12, max_prompt_length=4)
    assert ids == prompt_ids[:4] + response_ids and labels == [IGNORE_INDEX] * 4 + response_ids
    # Over max_length 10 even then: the response keeps max_length - max_prompt_length = 6 tokens.
    ids, _ = tokenize_example(prompt, response, smol_tokenizer, max_length=10, max_prompt_length=4)
    assert ids == prompt_ids[:4] + response_ids[:6]
    # A short prompt is not cut, and the response still keeps only max_length - max_prompt_length (as there).
    ids, _ = tokenize_example("one", response, smol_tokenizer, max_length=5, max_prompt_length=3)
    assert ids == prompt_ids[:1] + response_ids[:2]
    # Within max_length nothing is cut; without max_prompt_length the end is.
    assert tokenize_example(prompt, response, smol_tokenizer, 15, 4)[0] == prompt_ids + response_ids
    assert tokenize_example(prompt, response, smol_tokenizer, 10)[0] == prompt_ids + response_ids[:2]


def test_sequence_sum_divides_by_sequences_and_token_mean_by_tokens(tiny_model, smol_tokenizer):
    short = tokenize_example("Q: 1+1?", " 2<|im_end|>", smol_tokenizer, max_length=256)
    long = tokenize_example("Q: what is three plus four, in words?", " seven, of course<|im_end|>", smol_tokenizer, 256)
    batch = collate([short, long], smol_tokenizer.pad_token_id)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, torch_dtype=torch.float32)
    # By hand: each sequence's summed negative log-likelihood of its response tokens.
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        targets = batch["labels"][:, 1:]
        log_probs = logits.log_softmax(-1).gather(2, targets.clamp(min=0)[..., None]).squeeze(2)
        sums = -(log_probs * (targets != IGNORE_INDEX)).sum(1)
    tokens = int((targets != IGNORE_INDEX).sum())

    def gradient_norm(loss_reduction):
        args = TrainArgs(model=tiny_model, data=tiny_model, out=tiny_model, clip="none", optimizer_in_backward=False)
        updater = make_updater(model, args)
        result = train_step(model, updater, [batch], "fp32", torch.device("cpu"), True, loss_reduction)
        assert result.loss == pytest.approx(float(sums.sum()) / tokens, rel=1e-5)  # reported per token either way
        return result.grad_norm, updater

    token_mean, _ = gradient_norm("token_mean")
    # lr 1e-5 moved the model: measure the other reduction's gradient on the same weights.
    model = AutoModelForCausalLM.from_pretrained(tiny_model, torch_dtype=torch.float32)
    sequence_sum, _ = gradient_norm("sequence_sum")
    # The same summed loss, divided by 2 sequences instead of `tokens` tokens.
    assert sequence_sum == pytest.approx(token_mean * tokens / 2, rel=1e-4)


def test_dpo_and_a_prompt_longer_than_the_sequence_are_refused(tmp_path, train_records):
    with pytest.raises(UserError, match="loss dpo averages over its pairs: --loss-reduction is for loss sft"):
        validate(
            TrainArgs(model=tmp_path, data=train_records, out=tmp_path / "r", loss="dpo", loss_reduction="sequence_sum")
        )
    with pytest.raises(UserError, match="max_prompt_length 512 leaves no response token within max_length 512"):
        validate(TrainArgs(model=tmp_path, data=train_records, out=tmp_path / "r", max_prompt_length=512))
