import copy
import json
import logging
import subprocess
import sys

import pytest

from lota.core.errors import UserError
from lota.core.io import read_jsonl
from lota.evaluation.generation import GenerateArgs, generate_transformers
from lota.preference_data import PreferenceDataArgs, build_pairs, hub_pair, load_hub_rows, run
from lota.tasks.formats import format_prompt
from lota.tasks.records import seeded_subset
from tests.conftest import build_tiny_llama, write_records

EOS = "<|im_end|>"
QUESTIONS = [
    ("What is 2+3?", "2 + 3 = 5. #### 5"),
    ("Tom has 4 apples and eats one. How many are left?", "4 - 1 = 3. #### 3"),
    ("What is 6 times 7?", "6 * 7 = 42. #### 42"),
    ("Half of 18?", "18 / 2 = 9. #### 9"),
]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, smol_tokenizer):
    """Prepared training records as lota.prepare_data writes them."""
    records = [
        {
            "id": index,
            "prompt": format_prompt(question, smol_tokenizer, require_chat_template=True),
            "response": answer + EOS,
            "gold": answer.rsplit("#### ", 1)[1],
            "subtask": "gsm8k",
        }
        for index, (question, answer) in enumerate(QUESTIONS)
    ]
    return write_records(tmp_path_factory.mktemp("prepared") / "train.jsonl", records)


@pytest.fixture(scope="module")
def speaking_model(tmp_path_factory, smol_tokenizer):
    """A tiny model whose greedy completions are words (the seed-0 one only says newlines)."""
    return build_tiny_llama(tmp_path_factory.mktemp("speaking") / "model", smol_tokenizer, seed=1)


def read_pairs(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_pairs_hold_the_reference_against_the_model_greedy_completion(tmp_path, speaking_model, prepared):
    args = PreferenceDataArgs(model=speaking_model, data=prepared, out=tmp_path / "pairs.jsonl", max_new_tokens=4)
    run(args)
    pairs = read_pairs(args.out)
    records = read_jsonl(prepared)
    by_prompt = {record["prompt"]: record["response"] for record in records}
    assert len(pairs) == 4 and all(list(pair) == ["prompt", "chosen", "rejected"] for pair in pairs)
    assert sorted(pair["prompt"] for pair in pairs) == sorted(by_prompt)
    assert all(pair["chosen"] == by_prompt[pair["prompt"]] for pair in pairs)
    greedy = generate_transformers(
        GenerateArgs(model=speaking_model, data=prepared, out=args.out, batch_size=4, max_new_tokens=4),
        [pair["prompt"] for pair in pairs],
    )
    assert [pair["rejected"] for pair in pairs] == [completion.strip() + EOS for completion in greedy]
    assert all(len(pair["rejected"]) > len(EOS) for pair in pairs)


def test_runs_are_deterministic_and_size_takes_a_seeded_subset(tmp_path, speaking_model, prepared):
    common = {"model": speaking_model, "data": prepared, "size": 2, "max_new_tokens": 3, "batch_size": 2, "seed": 1}
    run(PreferenceDataArgs(out=tmp_path / "first.jsonl", **common))
    run(PreferenceDataArgs(out=tmp_path / "second.jsonl", **common))
    assert (tmp_path / "first.jsonl").read_bytes() == (tmp_path / "second.jsonl").read_bytes()
    subset = seeded_subset(read_jsonl(prepared), 2, 1)
    assert [pair["prompt"] for pair in read_pairs(tmp_path / "first.jsonl")] == [r["prompt"] for r in subset]


def test_pairs_that_compare_nothing_are_dropped(tmp_path, tiny_model, prepared, monkeypatch, caplog):
    records = read_jsonl(prepared)
    replies = {
        records[0]["prompt"]: " " + records[0]["response"].removesuffix(EOS) + "\n",  # the reference itself
        records[1]["prompt"]: "",
        records[2]["prompt"]: "  \n",
        records[3]["prompt"]: "  18 / 2 = 8. #### 8\n",
    }
    seen = []

    def fake_generation(args, prompts):
        seen.append(args)
        return [replies[prompt] for prompt in prompts]

    monkeypatch.setattr("lota.preference_data.generate_transformers", fake_generation)
    args = PreferenceDataArgs(model=tiny_model, data=prepared, out=tmp_path / "pairs.jsonl", max_new_tokens=7)
    with caplog.at_level(logging.INFO, logger="lota.preference_data"):
        run(args)
    assert seen[0].temperature == 0 and seen[0].max_new_tokens == 7 and seen[0].backend == "transformers"
    assert read_pairs(args.out) == [
        {"prompt": records[3]["prompt"], "chosen": records[3]["response"], "rejected": "18 / 2 = 8. #### 8" + EOS}
    ]
    assert "3 of 4 pairs dropped" in caplog.text

    replies[records[3]["prompt"]] = records[3]["response"]  # the reference, end-of-sequence token and all
    with pytest.raises(UserError, match="^no preference pair left of 4: every rejected"):
        run(PreferenceDataArgs(model=tiny_model, data=prepared, out=tmp_path / "none.jsonl"))
    assert not (tmp_path / "none.jsonl").exists()


# --- hub rows ---------------------------------------------------------------------------


def ultrafeedback_row(question, chosen, rejected, history=()):
    context = [*history, {"role": "user", "content": question}]
    return {
        "prompt": question,
        "prompt_id": "x",
        "chosen": [*context, {"role": "assistant", "content": chosen}],
        "rejected": [*context, {"role": "assistant", "content": rejected}],
        "score_chosen": 8.0,
        "score_rejected": 3.0,
    }


def test_hub_conversations_become_a_templated_prompt_and_the_last_answers(smol_tokenizer):
    pair = hub_pair(ultrafeedback_row("Name a colour.", "Blue.", "Seven."), smol_tokenizer, "row 0")
    expected_prompt = smol_tokenizer.apply_chat_template(
        [{"role": "user", "content": "Name a colour."}], tokenize=False, add_generation_prompt=True
    )
    assert pair == {"prompt": expected_prompt, "chosen": "Blue." + EOS, "rejected": "Seven." + EOS}
    assert pair["prompt"] == format_prompt("Name a colour.", smol_tokenizer, require_chat_template=True)

    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    pair = hub_pair(ultrafeedback_row("And a fruit?", "Apple.", "Blue.", history), smol_tokenizer, "row 1")
    assert pair["prompt"] == smol_tokenizer.apply_chat_template(
        [*history, {"role": "user", "content": "And a fruit?"}], tokenize=False, add_generation_prompt=True
    )
    assert pair["prompt"].endswith("<|im_start|>assistant\n") and "Hello!" in pair["prompt"]
    assert (pair["chosen"], pair["rejected"]) == ("Apple." + EOS, "Blue." + EOS)


def test_hub_rows_with_plain_strings_and_without_a_chat_template(smol_tokenizer):
    pair = hub_pair({"prompt": "2+2?", "chosen": "4", "rejected": "5"}, smol_tokenizer, "row 0")
    prompt = format_prompt("2+2?", smol_tokenizer, require_chat_template=True)
    assert pair == {"prompt": prompt, "chosen": "4" + EOS, "rejected": "5" + EOS}
    plain = copy.deepcopy(smol_tokenizer)
    plain.chat_template = None
    pair = hub_pair(ultrafeedback_row("2+2?", "4", "5"), plain, "row 0")
    assert pair["prompt"] == f"{plain.bos_token}Question: 2+2?\nAnswer: "
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    with pytest.raises(UserError, match="^row 3: the tokenizer of .* has no chat template for a conversation$"):
        hub_pair(ultrafeedback_row("2+2?", "4", "5", history), plain, "row 3")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"prompt": "q", "chosen": "a", "rejected": ["b"]}, "'chosen' and 'rejected' must both be strings or both"),
        ({"chosen": "a", "rejected": "b"}, "a row with string 'chosen' and 'rejected' needs a string 'prompt'"),
        (
            {"chosen": [{"role": "user", "content": "q"}], "rejected": [{"role": "assistant", "content": "b"}]},
            "'chosen' must be messages {role, content} ending with an assistant message",
        ),
        (
            {"chosen": [{"role": "assistant", "content": "a"}], "rejected": [{"role": "assistant", "content": "b"}]},
            "no message before the assistant's answer",
        ),
        (
            {
                "chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                "rejected": [{"role": "user", "content": "other"}, {"role": "assistant", "content": "b"}],
            },
            "'chosen' and 'rejected' continue different conversations",
        ),
    ],
)
def test_malformed_hub_rows_are_named(smol_tokenizer, row, message):
    with pytest.raises(UserError) as raised:
        hub_pair(row, smol_tokenizer, "ds train_prefs row 7")
    assert str(raised.value).startswith("ds train_prefs row 7: ") and message in str(raised.value)


def test_hub_dataset_replaces_data_and_generation(tmp_path, tiny_model, smol_tokenizer, monkeypatch, caplog):
    rows = [
        ultrafeedback_row("Name a colour.", "Blue.", "Seven."),
        ultrafeedback_row("Same?", "Yes.", " Yes. "),  # compares nothing: dropped
        ultrafeedback_row("2+2?", "4", "5"),
    ]
    requested = []

    def fake_load(dataset_id, config, split):
        requested.append((dataset_id, config, split))
        return rows

    def no_generation(args, prompts):
        raise AssertionError("nothing is generated for hub pairs")

    monkeypatch.setattr("lota.preference_data.load_hub_rows", fake_load)
    monkeypatch.setattr("lota.preference_data.generate_transformers", no_generation)
    args = PreferenceDataArgs(model=tiny_model, out=tmp_path / "pairs.jsonl", hub_dataset="org/prefs")
    run(args)
    assert requested == [("org/prefs", None, "train_prefs")]
    expected = [hub_pair(row, smol_tokenizer, "") for row in seeded_subset(rows, 0, 0) if row is not rows[1]]
    assert read_pairs(args.out) == expected and len(expected) == 2

    args.size, args.seed, args.data = 1, 0, tmp_path / "unused.jsonl"
    with caplog.at_level(logging.WARNING, logger="lota.preference_data"):
        assert build_pairs(args) == [hub_pair(seeded_subset(rows, 1, 0)[0], smol_tokenizer, "")]
    assert "is not used: the pairs come from --hub-dataset org/prefs" in caplog.text


def test_a_hub_dataset_that_cannot_be_loaded_is_one_line(monkeypatch):
    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'org/prefs' on the Hub (LocalEntryNotFoundError)\nTraceback detail")

    monkeypatch.setattr("datasets.load_dataset", unreachable)
    with pytest.raises(UserError) as raised:
        load_hub_rows("org/prefs", None, "train_prefs")
    assert str(raised.value) == (
        "hub dataset org/prefs (split train_prefs) could not be loaded: "
        "Couldn't reach 'org/prefs' on the Hub (LocalEntryNotFoundError)"
    )


# --- bad input --------------------------------------------------------------------------


def test_bad_inputs_are_named(tmp_path, tiny_model, prepared):
    def attempt(**changes):
        args = PreferenceDataArgs(model=tiny_model, data=prepared, out=tmp_path / "pairs.jsonl")
        for key, value in changes.items():
            setattr(args, key, value)
        with pytest.raises(UserError) as raised:
            build_pairs(args)
        return str(raised.value)

    assert attempt(size=-1) == "size must be >= 0, got -1"
    assert attempt(max_new_tokens=0) == "max_new_tokens must be >= 1, got 0"
    assert attempt(data=None).startswith("preference data needs --data")
    assert attempt(data=tmp_path / "missing.jsonl") == f"training data not found: {tmp_path / 'missing.jsonl'}"
    assert attempt(model=tmp_path) == f"not a model directory (no config.json): {tmp_path}"
    records = read_jsonl(prepared)
    del records[1]["response"]
    broken = write_records(tmp_path / "broken.jsonl", records)
    assert attempt(data=broken) == f"{broken}: record 2 needs string fields 'prompt' and 'response'"
    assert not (tmp_path / "pairs.jsonl").exists()


def test_the_cli_reports_bad_input_in_one_line(tmp_path, tiny_model, prepared):
    out = tmp_path / "pairs.jsonl"
    command = [sys.executable, "-m", "lota.preference_data", "--model", str(tiny_model), "--out", str(out)]
    done = subprocess.run(
        [*command, "--data", str(prepared), "--size", "-1"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == "error: size must be >= 0, got -1"
    assert not out.exists()
