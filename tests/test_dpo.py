import logging
import math

import pytest
import torch

from lota.core.errors import UserError
from lota.core.modeling import load_model
from lota.training.data import IGNORE_INDEX
from lota.training.dpo import dpo_loss, pair_batch, reference_logprobs, sequence_logprobs, tokenize_preferences

PROMPT = "<|im_start|>user\nWhat is {}?<|im_end|>\n<|im_start|>assistant\n"


def preference_records():
    return [
        {"prompt": PROMPT.format("1+1"), "chosen": "2<|im_end|>", "rejected": "It is 3.<|im_end|>"},
        {"prompt": PROMPT.format("2*3"), "chosen": "2*3 = 6. The answer is 6<|im_end|>", "rejected": "5<|im_end|>"},
        {"prompt": PROMPT.format("10-4"), "chosen": "6<|im_end|>", "rejected": "10-4 is 7, so 7<|im_end|>"},
    ]


@pytest.fixture(scope="module")
def pairs(smol_tokenizer):
    return tokenize_preferences(preference_records(), smol_tokenizer, 256, "prefs.jsonl")


@pytest.fixture(scope="module")
def model(tiny_model):
    return load_model(tiny_model, torch.float32, on=torch.device("cpu"))


def naive_logprob(model, example):
    """Full logits of one unpadded sequence, log-softmax, gather, sum over the response."""
    ids, labels = (torch.tensor(part) for part in example)
    logits = model(input_ids=ids.unsqueeze(0)).logits[0, :-1].float()
    targets = labels[1:]
    scored = targets != IGNORE_INDEX
    return logits.log_softmax(-1)[scored].gather(1, targets[scored].unsqueeze(1)).sum()


# --- dpo_loss ---------------------------------------------------------------------------


def test_dpo_loss_matches_hand_computed_values():
    policy_chosen, policy_rejected = torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -1.0])
    reference_chosen, reference_rejected = torch.tensor([-2.0, -2.0]), torch.tensor([-2.0, -1.5])
    losses, chosen_rewards, rejected_rewards = dpo_loss(
        policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta=0.5
    )
    # logits: (-1 + 3) - (-2 + 2) = 2 and (-2 + 1) - (-2 + 1.5) = -0.5; times beta 1 and -0.25;
    # -log sigmoid(x) = log(1 + e^-x).
    assert losses.tolist() == pytest.approx([0.31326168751822286, 0.8259394198788436], abs=1e-7)
    assert chosen_rewards.tolist() == [0.5, 0.0]  # 0.5 * (-1 + 2), 0.5 * (-2 + 2)
    assert rejected_rewards.tolist() == [-0.5, 0.25]  # 0.5 * (-3 + 2), 0.5 * (-1 + 1.5)


def test_reference_free_ignores_the_reference():
    policy_chosen, policy_rejected = torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -1.0])
    for reference in (torch.tensor([-2.0, -2.0]), torch.tensor([5.0, -7.0])):
        losses, _, _ = dpo_loss(policy_chosen, policy_rejected, reference, -reference, beta=0.5, reference_free=True)
        # logits 2 and -1, times beta: 1 and -0.5
        assert losses.tolist() == pytest.approx([0.31326168751822286, 0.9740769841801067], abs=1e-7)


def test_loss_is_log_2_where_the_policy_is_the_reference():
    chosen, rejected = torch.tensor([-4.0, -0.5, -12.0]), torch.tensor([-1.0, -9.0, -12.0])
    losses, chosen_rewards, rejected_rewards = dpo_loss(chosen, rejected, chosen, rejected, beta=0.1)
    assert losses.tolist() == [pytest.approx(math.log(2), abs=1e-7)] * 3
    assert chosen_rewards.tolist() == rejected_rewards.tolist() == [0.0] * 3


def test_rewards_are_detached_and_the_gradient_follows_the_formula():
    policy_chosen = torch.tensor([-1.0, -2.0], requires_grad=True)
    policy_rejected = torch.tensor([-3.0, -1.0], requires_grad=True)
    losses, chosen_rewards, rejected_rewards = dpo_loss(
        policy_chosen, policy_rejected, torch.tensor([-2.0, -2.0]), torch.tensor([-2.0, -1.5]), beta=0.5
    )
    assert losses.requires_grad and not chosen_rewards.requires_grad and not rejected_rewards.requires_grad
    losses.sum().backward()
    # d/d(policy_chosen) of -log sigmoid(beta * logits) = -beta * sigmoid(-beta * logits)
    expected = [-0.5 * torch.sigmoid(torch.tensor(-x)).item() for x in (1.0, -0.25)]
    assert policy_chosen.grad.tolist() == pytest.approx(expected, abs=1e-7)
    assert policy_rejected.grad.tolist() == pytest.approx([-g for g in expected], abs=1e-7)


@pytest.mark.parametrize("beta", [0.0, -0.1, float("nan")])
def test_beta_must_be_positive(beta):
    one = torch.zeros(1)
    with pytest.raises(UserError, match=f"^beta must be > 0, got {beta}$"):
        dpo_loss(one, one, one, one, beta=beta)


# --- data -------------------------------------------------------------------------------


def test_tokenize_preferences_shares_the_prompt_and_masks_it(smol_tokenizer, pairs):
    assert len(pairs) == 3
    prompt_ids = smol_tokenizer(PROMPT.format("1+1"), add_special_tokens=False).input_ids
    (chosen_ids, chosen_labels), (rejected_ids, rejected_labels) = pairs[0]
    assert chosen_ids[: len(prompt_ids)] == rejected_ids[: len(prompt_ids)] == prompt_ids
    assert chosen_labels[: len(prompt_ids)] == rejected_labels[: len(prompt_ids)] == [IGNORE_INDEX] * len(prompt_ids)
    assert chosen_labels[len(prompt_ids) :] == smol_tokenizer("2<|im_end|>", add_special_tokens=False).input_ids
    assert rejected_ids[-1] == smol_tokenizer.eos_token_id


def test_tokenize_preferences_names_the_bad_record(smol_tokenizer):
    records = preference_records()
    del records[1]["rejected"]
    with pytest.raises(UserError) as raised:
        tokenize_preferences(records, smol_tokenizer, 256, "prefs.jsonl")
    assert str(raised.value) == "prefs.jsonl: record 2 needs string fields 'prompt', 'chosen' and 'rejected'"
    records = preference_records()
    records[2]["chosen"] = ["not", "a", "string"]
    with pytest.raises(UserError, match="^prefs.jsonl: record 3 needs string fields"):
        tokenize_preferences(records, smol_tokenizer, 256, "prefs.jsonl")


def test_pairs_without_a_response_token_on_either_side_are_dropped(smol_tokenizer, caplog):
    records = preference_records()
    records[0]["rejected"] = ""  # nothing to compare
    records[1]["prompt"] = "long " * 300  # the prompt fills max_length
    with caplog.at_level(logging.WARNING, logger="lota.train"):
        kept = tokenize_preferences(records, smol_tokenizer, 64, "prefs.jsonl")
    assert len(kept) == 1 and kept[0][0][0][-1] == smol_tokenizer.eos_token_id
    assert "2 of 3 records dropped" in caplog.text
    with pytest.raises(UserError, match="^prefs.jsonl: no record keeps a response token"):
        tokenize_preferences(records[:2], smol_tokenizer, 64, "prefs.jsonl")


def test_pair_batch_puts_chosen_rows_first(pairs):
    batch = pair_batch(pairs, pad_id=0)
    assert batch["input_ids"].shape[0] == 6
    for row, (ids, labels) in enumerate([chosen for chosen, _ in pairs] + [rejected for _, rejected in pairs]):
        assert batch["input_ids"][row, : len(ids)].tolist() == ids
        assert batch["labels"][row].tolist() == labels + [IGNORE_INDEX] * (batch["labels"].shape[1] - len(labels))
        assert batch["attention_mask"][row].sum() == len(ids)


# --- log-probabilities ------------------------------------------------------------------


@pytest.mark.parametrize("trim_logits", [True, False])
def test_sequence_logprobs_equal_a_naive_computation_whatever_the_padding(model, pairs, trim_logits):
    examples = [chosen for chosen, _ in pairs] + [rejected for _, rejected in pairs]
    with torch.no_grad():
        expected = torch.stack([naive_logprob(model, example) for example in examples])
        found = sequence_logprobs(model, pair_batch(pairs, pad_id=0), trim_logits)
        alone = torch.cat([sequence_logprobs(model, pair_batch([pair], pad_id=0), trim_logits) for pair in pairs])
    assert found.dtype == torch.float32 and found.shape == (6,)
    assert (found < 0).all()
    torch.testing.assert_close(found, expected, rtol=0, atol=1e-4)
    # Each row alone (one pair, less padding) gives what it gives in the padded batch.
    torch.testing.assert_close(alone[[0, 2, 4, 1, 3, 5]], found, rtol=0, atol=1e-5)


def test_sequence_logprobs_carry_gradients(model, pairs):
    found = sequence_logprobs(model, pair_batch(pairs[:1], pad_id=0), trim_logits=True)
    found.sum().backward()
    gradient = model.get_input_embeddings().weight.grad
    assert gradient is not None and gradient.abs().sum() > 0
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("training", [True, False])
def test_reference_logprobs_are_the_no_grad_sums_and_keep_the_mode(model, pairs, training):
    model.train(training)
    modes = []
    hook = model.register_forward_pre_hook(lambda module, inputs: modes.append(module.training))
    try:
        found = reference_logprobs(model, [pairs[:2], pairs[2:]], 0, torch.device("cpu"), "fp32")
    finally:
        hook.remove()
    assert model.training is training and modes == [False, False]  # a forward pass per group
    assert [(len(chosen), len(rejected)) for chosen, rejected in found] == [(2, 2), (1, 1)]
    chosen, rejected = (torch.cat(side) for side in zip(*found, strict=True))
    assert not chosen.requires_grad and not rejected.requires_grad
    with torch.no_grad():
        expected = sequence_logprobs(model.eval(), pair_batch(pairs, pad_id=0), trim_logits=True)
    torch.testing.assert_close(torch.cat([chosen, rejected]), expected, rtol=0, atol=1e-5)
    ((bf16_chosen, _),) = reference_logprobs(model, [pairs], 0, torch.device("cpu"), "bf16")
    assert bf16_chosen.dtype == torch.float32 and torch.isfinite(bf16_chosen).all()
    torch.testing.assert_close(bf16_chosen, chosen, rtol=0.05, atol=0.5)


def test_a_dpo_step_widens_the_policy_margin(tiny_model, pairs):
    policy = load_model(tiny_model, torch.float32, on=torch.device("cpu")).train()
    ((reference_chosen, reference_rejected),) = reference_logprobs(policy, [pairs], 0, torch.device("cpu"), "fp32")
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.05)
    batch = pair_batch(pairs, pad_id=0)
    margins = []
    for _ in range(2):
        logprobs = sequence_logprobs(policy, batch, trim_logits=True)
        chosen, rejected = logprobs[: len(pairs)], logprobs[len(pairs) :]
        margins.append((chosen - rejected).detach())
        losses, _, _ = dpo_loss(chosen, rejected, reference_chosen, reference_rejected, beta=0.1)
        if len(margins) == 1:
            assert losses.tolist() == pytest.approx([math.log(2)] * len(pairs), abs=1e-5)  # policy = reference
        optimizer.zero_grad()
        losses.mean().backward()
        optimizer.step()
    assert margins[1].mean() > margins[0].mean() + 1e-3
