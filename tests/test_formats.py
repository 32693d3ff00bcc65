"""The prompt and target formats: the official LoTA code's strings byte for byte, and the records
prepare_data builds with them."""

import json

import pytest

from lota.core.errors import UserError
from lota.prepare_data import PrepareDataArgs, run
from lota.tasks.formats import format_prompt, format_target
from lota.tasks.records import TextFormat, prepare_split

QUESTION = "Natalia sold clips to 48 of her friends in April. How many clips did she sell?"


def test_plain_prompt_is_the_official_gsm8k_string(smol_tokenizer):
    expected = (
        "Natalia sold clips to 48 of her friends in April. How many clips did she sell?\n"
        "Answer the above question. First think step by step and then answer the final number.\n"
    )
    assert format_prompt(QUESTION, smol_tokenizer, "plain") == expected


@pytest.mark.parametrize("training, indent", [(True, 20), (False, 16)])
def test_alpaca_prompts_are_the_official_commonsense_strings(smol_tokenizer, training, indent):
    """get_commonsense's training prompt indents by 20 spaces, get_default's evaluation prompt by 16."""
    lines = [
        "Below is an instruction that describes a task. Write a response that appropriately completes the request. ",
        "",
        " " * indent + "### Instruction:",
        " " * indent + "Is the sky blue?",
        "",
        " " * indent + "### Response:",
        " " * indent,
    ]
    assert format_prompt("Is the sky blue?", smol_tokenizer, "alpaca", training=training) == "\n".join(lines)


def test_human_assistant_prompt_is_the_official_sharegpt4_string(smol_tokenizer):
    expected = "Human: Write a haiku.\n\nAssistant: "
    assert format_prompt("Write a haiku.", smol_tokenizer, "human_assistant", training=True) == expected
    assert format_prompt("Write a haiku.", smol_tokenizer, "human_assistant") == expected


def test_chat_prompt_is_the_default(smol_tokenizer):
    prompt = format_prompt(QUESTION, smol_tokenizer)
    assert prompt.startswith("<|im_start|>system") and prompt.endswith("<|im_start|>assistant\n")
    with pytest.raises(UserError, match="prompt format must be one of chat, plain, alpaca, human_assistant, got 'xml'"):
        format_prompt(QUESTION, smol_tokenizer, "xml")


def test_official_target_replaces_the_gsm8k_marker():
    answer = "She sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72"
    assert format_target(answer, "official") == "She sold 48/2 = <<48/2=24>>24 clips in May.\nThe final answer is:  72"
    assert format_target(answer) == answer
    assert format_target("the correct answer is answer2", "official") == "the correct answer is answer2"
    with pytest.raises(UserError, match="target format must be one of lota, official"):
        format_target(answer, "paper")


def test_records_in_the_official_format(gsm8k_dir, smol_tokenizer):
    official = TextFormat(prompt="plain", target="official")
    records = prepare_split("gsm8k", "train", gsm8k_dir, smol_tokenizer, size=3, seed=0, text=official)
    default = prepare_split("gsm8k", "train", gsm8k_dir, smol_tokenizer, size=3, seed=0)
    for record, plain in zip(records, default, strict=True):
        assert record["id"] == plain["id"] and record["gold"] == plain["gold"]
        assert record["prompt"].endswith("answer the final number.\n") and "<|im_start|>" not in record["prompt"]
        assert record["response"].endswith(f"The final answer is:  {record['gold']}{smol_tokenizer.eos_token}")
        assert "####" not in record["response"]


def test_first_evaluation_records_in_file_order(gsm8k_dir, smol_tokenizer):
    first = prepare_split("gsm8k", "test", gsm8k_dir, smol_tokenizer, size=4, seed=0, subset="first")
    assert [record["id"] for record in first] == [0, 1, 2, 3]
    every = prepare_split("gsm8k", "test", gsm8k_dir, smol_tokenizer, size=0, seed=3, subset="first")
    assert [record["id"] for record in every] == list(range(6))
    seeded = prepare_split("gsm8k", "test", gsm8k_dir, smol_tokenizer, size=4, seed=0)
    assert [record["id"] for record in seeded] != [0, 1, 2, 3]


def test_run_writes_the_official_format(tmp_path, gsm8k_dir, tiny_model):
    args = PrepareDataArgs(
        task="gsm8k",
        tokenizer=tiny_model,
        eval_out=tmp_path / "eval.jsonl",
        data_dir=gsm8k_dir,
        eval_size=2,
        eval_subset="first",
        prompt_format="plain",
        target_format="official",
    )
    run(args)
    records = [json.loads(line) for line in (tmp_path / "eval.jsonl").read_text().splitlines()]
    assert [record["id"] for record in records] == [0, 1]
    assert all(record["prompt"].endswith("answer the final number.\n") for record in records)
    assert all("The final answer is: " in record["response"] for record in records)
