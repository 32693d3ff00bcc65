"""AlpacaEval: the win rate of a model's outputs against the reference outputs, judged offline."""

import json

import huggingface_hub
import pytest
import torch

from lota.alpaca_eval import AlpacaEvalArgs, judge_outputs
from lota.core.errors import UserError
from lota.core.modeling import load_model, load_tokenizer
from lota.evaluation.alpaca_judge import JUDGE_TOKENS, LocalJudge, check_api_judge, paired_outputs
from tests.conftest import SHARED_DATA, write_records

REFERENCES = json.loads((SHARED_DATA / "alpaca_eval" / "gpt4_1106_preview_outputs.json").read_text())


@pytest.fixture
def offline_hub(monkeypatch):
    """No hub: the length-controlled win rate's download fails at once instead of retrying."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def samples(tmp_path, completions):
    records = [
        {
            "id": index,
            "prompt": "...",
            "completion": text,
            "gold": REFERENCES[index]["output"],
            "backend": "transformers",
        }
        for index, text in completions.items()
    ]
    return write_records(tmp_path / "samples.jsonl", records)


def judged_locally(tmp_path, judge_model, completions, **options):
    """(args, result) of judging `completions` (id -> text) with the local judge on `judge_model`."""
    args = AlpacaEvalArgs(
        samples=samples(tmp_path, completions),
        out=tmp_path / "result.json",
        judge="local",
        judge_model=judge_model,
        data_dir=SHARED_DATA,
        annotations=tmp_path / "annotations.json",
        **options,
    )
    judge_outputs(args)
    return args, json.loads(args.out.read_text())


def test_samples_pair_with_the_reference_output_of_their_instruction(tmp_path):
    ids, references, outputs = paired_outputs(
        [{"id": 7, "completion": " Hi. "}, {"id": 2, "completion": "No."}], REFERENCES, tmp_path, "m"
    )
    assert ids == [7, 2]
    assert references[0] == {
        "instruction": REFERENCES[7]["instruction"],
        "output": REFERENCES[7]["output"],
        "generator": "gpt4_1106_preview",
    }
    assert outputs == [
        {"instruction": REFERENCES[7]["instruction"], "output": "Hi.", "generator": "m"},
        {"instruction": REFERENCES[2]["instruction"], "output": "No.", "generator": "m"},
    ]
    for bad, message in (
        ({"id": 805, "completion": ""}, "id 805, not one of the 805"),
        ({"id": 1}, "needs an integer"),
    ):
        with pytest.raises(UserError, match=message):
            paired_outputs([bad], REFERENCES, tmp_path, "m")


def test_the_local_judge_reads_the_probabilities_of_m_and_M_as_its_first_token(tiny_model):
    judge = LocalJudge(tiny_model)
    prompt = "<|im_start|>system\nJudge.\n<|im_end|>\n<|im_start|>user\nWhich is best, m or M?\n<|im_end|>"
    completions = judge([prompt])
    top = completions["completions_all"][0]["logprobs"]["content"][0]["top_logprobs"]

    tokenizer, model = load_tokenizer(tiny_model), load_model(tiny_model)
    messages = [{"role": "system", "content": "Judge."}, {"role": "user", "content": "Which is best, m or M?"}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    expected = torch.log_softmax(model(ids["input_ids"]).logits[0, -1], dim=-1)
    token_ids = [tokenizer.encode(token, add_special_tokens=False)[0] for token in JUDGE_TOKENS]
    assert [entry["token"] for entry in top] == list(JUDGE_TOKENS)
    assert [entry["logprob"] for entry in top] == pytest.approx(expected[token_ids].tolist(), abs=1e-5)
    assert completions["completions"] == [max(top, key=lambda entry: entry["logprob"])["token"]]


def test_an_api_judge_without_its_key_stops_with_one_line(monkeypatch, tmp_path):
    for variable in ("OPENAI_API_KEY", "OPENAI_API_KEYS"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr("alpaca_eval.constants.OPENAI_CLIENT_CONFIG_PATH", str(tmp_path / "none.yaml"))
    with pytest.raises(UserError, match="calls the OpenAI API: set OPENAI_API_KEY, or judge offline"):
        check_api_judge("weighted_alpaca_eval_gpt4_turbo")
    with pytest.raises(UserError, match="unknown AlpacaEval judge 'no_such_judge'"):
        check_api_judge("no_such_judge")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    check_api_judge("weighted_alpaca_eval_gpt4_turbo")

    monkeypatch.delenv("OPENAI_API_KEY")
    args = AlpacaEvalArgs(samples=samples(tmp_path, {0: "Hi."}), out=tmp_path / "r.json", data_dir=SHARED_DATA)
    with pytest.raises(UserError, match="OPENAI_API_KEY"):
        judge_outputs(args)
    assert not args.out.exists()


def test_outputs_identical_to_the_references_are_draws(tmp_path, tiny_model, offline_hub):
    completions = {index: REFERENCES[index]["output"] for index in (3, 1, 4)}
    args, result = judged_locally(tmp_path, tiny_model, completions, name="copycat")
    assert (result["win_rate"], result["n_draws"], result["n_total"]) == (50.0, 3.0, 3.0)
    annotations = json.loads(args.annotations.read_text())
    assert [(row["id"], row["preference"]) for row in annotations] == [(3, 1.5), (1, 1.5), (4, 1.5)]


def test_a_local_judge_gives_a_win_rate_with_its_standard_error(tmp_path, tiny_model, offline_hub):
    completions = {0: "I cannot help.", 5: REFERENCES[5]["output"], 9: "Sure: " + REFERENCES[9]["output"][:100]}
    config = '{"alpaca_eval": {"judge": "local"}}'
    args, result = judged_locally(tmp_path, tiny_model, completions, name="lota_alpaca_s90", config_json=config)
    assert result["model"] == "lota_alpaca_s90" and result["reference"] == "gpt4_1106_preview"
    assert result["judge"] == "weighted_alpaca_eval_local" and result["judge_model"] == str(tiny_model)
    assert result["harness"] == "alpaca_eval" and result["harness_version"] == result["versions"]["alpaca_eval"]
    assert result["n_total"] == 3 and 0 < result["win_rate"] < 100 and result["standard_error"] > 0
    assert result["length_controlled_winrate"] is None and result["length_controlled_error"]
    assert result["generation_backend"] == "transformers" and result["config"] == {"alpaca_eval": {"judge": "local"}}
    annotations = json.loads(args.annotations.read_text())
    preferences = {row["id"]: row["preference"] for row in annotations}
    assert preferences[5] == 1.5 and all(1 <= preferences[index] <= 2 for index in (0, 9))
    # The win rate is the mean preference for the model's output, in percent.
    assert result["win_rate"] == pytest.approx(sum(p - 1 for p in preferences.values()) / 3 * 100)
    assert (
        annotations[0]["output"] == "I cannot help." and annotations[0]["reference_output"] == REFERENCES[0]["output"]
    )


def test_a_local_judge_needs_a_model(tmp_path):
    args = AlpacaEvalArgs(
        samples=samples(tmp_path, {0: "Hi."}), out=tmp_path / "r.json", judge="local", data_dir=SHARED_DATA
    )
    with pytest.raises(UserError, match="needs a model"):
        judge_outputs(args)
    assert not args.out.exists()
