"""The official LoTA recipes' datasets: HellaSwag (converted from hub records as LLM-Adapters' files
hold them, and joining the commonsense evaluation where present), commonsense_170k and ShareGPT4,
read from small files in the local layouts, and their official prompt formats."""

import json
import shutil

import pytest

from lota.core.errors import UserError
from lota.core.hub import load_hub_json
from lota.evaluation.scoring import task_accuracy
from lota.tasks import get_task
from lota.tasks.commonsense import from_hellaswag
from lota.tasks.formats import OFFICIAL_ALPACA_EVAL_PROMPT, OFFICIAL_ALPACA_TRAIN_PROMPT
from lota.tasks.records import TextFormat, prepare_split
from tests.conftest import SHARED_DATA, plan_preset, planned_jobs
from tests.test_plan import make_plan

# Rowan/hellaswag's validation record 0, and the first record of LLM-Adapters' dataset/hellaswag/test.json
# (the official code's rlaif/tasks/hellaswag/test.json, the same file) made from it.
HELLASWAG_HUB = {
    "ind": 24,
    "activity_label": "Roof shingle removal",
    "ctx_a": "A man is sitting on a roof.",
    "ctx_b": "he",
    "ctx": "A man is sitting on a roof. he",
    "endings": [
        "is using wrap to wrap a pair of skis.",
        "is ripping level tiles off.",
        "is holding a rubik's cube.",
        "starts pulling up roofing on a roof.",
    ],
    "source_id": "activitynet~v_-JhWjGDPHMY",
    "split": "val",
    "split_type": "indomain",
    "label": "3",
}
HELLASWAG_LOCAL = {
    "instruction": "Please choose the correct ending to complete the given sentence: Roof shingle removal: A man is"
    " sitting on a roof. he\n\nEnding1: is using wrap to wrap a pair of skis. Ending2: is ripping level tiles off."
    " Ending3: is holding a rubik's cube. Ending4: starts pulling up roofing on a roof.\n\nAnswer format:"
    " ending1/ending2/ending3/ending4",
    "input": "",
    "output": "the correct answer is ending4",
    "answer": "ending4",
}


@pytest.fixture
def data_dir(tmp_path):
    """The shared commonsense folders, and small HellaSwag, commonsense_170k and ShareGPT4 files."""
    for task in ("arc_challenge", "arc_easy", "boolq", "openbookqa", "piqa", "social_i_qa", "winogrande"):
        (tmp_path / task).symlink_to(SHARED_DATA / task)
    shutil.copytree(SHARED_DATA / "alpaca_eval", tmp_path / "alpaca_eval")
    (tmp_path / "hellaswag").mkdir()
    (tmp_path / "hellaswag" / "test.json").write_text(json.dumps([HELLASWAG_LOCAL] * 3))
    (tmp_path / "commonsense_170k").mkdir()
    mixed = [json.loads((SHARED_DATA / task / "train.json").read_text())[0] for task in ("boolq", "arc_easy")]
    (tmp_path / "commonsense_170k" / "commonsense_170k.json").write_text(json.dumps([*mixed, HELLASWAG_LOCAL]))
    (tmp_path / "sharegpt4").mkdir()
    completions = {"Write a haiku about rain.": ["Soft rain on the roof", "unused"], " Name a colour. ": ["Blue."]}
    (tmp_path / "sharegpt4" / "sharegpt1turn_df1.0_ff0_gpt4_completions.json").write_text(json.dumps(completions))
    return tmp_path


def test_hellaswag_hub_records_convert_to_llm_adapters_format():
    assert from_hellaswag(HELLASWAG_HUB) == HELLASWAG_LOCAL
    with pytest.raises(UserError, match="HellaSwag hub record lacks the field 'endings'"):
        from_hellaswag({"activity_label": "a", "ctx": "b", "label": "0"})


def test_hellaswag_is_scored_by_its_ending_labels():
    task = get_task("hellaswag")
    assert task.score("The correct answer is Ending4.", "ending4") and not task.score("ending3", "ending4")
    response = OFFICIAL_ALPACA_EVAL_PROMPT.format(instruction="...") + "the correct answer is ending4"
    assert task.official_score(response, "ending4") and not task.official_score(response, "ending1")


def test_hellaswag_joins_the_commonsense_evaluation_where_its_data_is(data_dir, smol_tokenizer):
    task = get_task("commonsense")
    records = prepare_split("commonsense", "test", data_dir, smol_tokenizer, size=2, seed=0, subset="first")
    assert [record["subtask"] for record in records] == [name for name in task.subtasks for _ in range(2)]
    assert records[-1]["gold"] == "ending4" and records[-1]["response"].startswith("the correct answer is ending4")
    training = prepare_split("commonsense", "train", data_dir, smol_tokenizer, size=0, seed=0)
    assert "hellaswag" not in {record["subtask"] for record in training}  # its training set is not mixed in
    # Without its folder the mean is over the seven others; any other missing subtask is an error.
    verdicts = [True] * len(records)
    overall, parts = task_accuracy(task, records, verdicts, data_dir / "samples.jsonl")
    assert len(parts) == 8 and overall["n"] == 16
    seven = [record for record in records if record["subtask"] != "hellaswag"]
    assert len(task_accuracy(task, seven, verdicts[: len(seven)], data_dir / "s.jsonl")[1]) == 7
    with pytest.raises(UserError, match="no samples of subtask 'piqa'"):
        task_accuracy(task, [r for r in seven if r["subtask"] != "piqa"], verdicts[:12], data_dir / "s.jsonl")


def test_the_plan_reads_hellaswag_only_where_its_folder_is(data_dir):
    files = make_plan(data_dir=str(data_dir)).local_task_files("commonsense")
    assert str(data_dir / "hellaswag" / "test.json") in files
    shutil.rmtree(data_dir / "hellaswag")
    files = make_plan(data_dir=str(data_dir)).local_task_files("commonsense")
    assert files and not any(file.startswith(str(data_dir / "hellaswag")) for file in files)
    with pytest.raises(UserError, match="task data folder not found: .*hellaswag"):
        make_plan(data_dir=str(data_dir), tasks={"hellaswag": {}}).local_task_files("hellaswag")


def test_commonsense_170k_trains_on_the_official_file_in_the_official_prompts(data_dir, smol_tokenizer):
    task = get_task("commonsense_170k")
    assert task.splits == ("train", "test") and task.subtasks == get_task("commonsense").subtasks
    raw = json.loads((data_dir / "commonsense_170k" / "commonsense_170k.json").read_text())
    text = TextFormat(prompt="alpaca")
    train = prepare_split("commonsense_170k", "train", data_dir, smol_tokenizer, 0, 0, text, "first")
    assert [record["prompt"] for record in train] == [
        OFFICIAL_ALPACA_TRAIN_PROMPT.format(instruction=record["instruction"]) for record in raw
    ]
    assert [record["response"] for record in train] == [record["output"] + smol_tokenizer.eos_token for record in raw]
    assert [record["gold"] for record in train] == [record["answer"] for record in raw]
    test = prepare_split("commonsense_170k", "test", data_dir, smol_tokenizer, 1, 0, text, "first")
    assert [record["subtask"] for record in test] == list(task.subtasks)
    assert all(record["prompt"].startswith(OFFICIAL_ALPACA_EVAL_PROMPT[:120]) for record in test)
    assert test[-1]["prompt"] == OFFICIAL_ALPACA_EVAL_PROMPT.format(instruction=HELLASWAG_LOCAL["instruction"])


def test_sharegpt4_trains_on_first_completions_and_answers_alpaca_eval(data_dir, smol_tokenizer):
    text = TextFormat(prompt="human_assistant")
    train = prepare_split("sharegpt4", "train", data_dir, smol_tokenizer, 0, 0, text, "first")
    assert [(record["prompt"], record["response"]) for record in train] == [
        ("Human: Write a haiku about rain.\n\nAssistant: ", "Soft rain on the roof" + smol_tokenizer.eos_token),
        ("Human:  Name a colour. \n\nAssistant: ", "Blue." + smol_tokenizer.eos_token),  # verbatim, as there
    ]
    test = prepare_split("sharegpt4", "test", data_dir, smol_tokenizer, 0, 0, text, "first")
    references = json.loads((SHARED_DATA / "alpaca_eval" / "gpt4_1106_preview_outputs.json").read_text())
    assert len(test) == 805 and test[0]["prompt"] == f"Human: {references[0]['instruction']}\n\nAssistant: "
    assert get_task("sharegpt4").score is None


@pytest.mark.parametrize(
    "content, message",
    [
        ("[]", "must hold a JSON object of instruction to a list of completions"),
        ('{"Hi": []}', "the instruction 'Hi' has no completion"),
        ('{"Hi": "Hello"}', "the instruction 'Hi' has no completion"),
    ],
)
def test_a_malformed_sharegpt4_file_is_named(data_dir, content, message):
    path = data_dir / "sharegpt4" / "sharegpt1turn_df1.0_ff0_gpt4_completions.json"
    path.write_text(content)
    with pytest.raises(UserError, match=f"^{path}.*{message}"):
        get_task("sharegpt4").load("train", data_dir)


def test_hub_files_fail_in_one_line_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="no local data folder is set .* the hub dataset TRI-ML/dpo-rlaif-data could"):
        load_hub_json("TRI-ML/dpo-rlaif-data", "sharegpt1turn_df1.0_ff0_gpt4_completions.json")


def test_a_sharegpt4_run_is_judged_on_its_own_samples(data_dir):
    plan = make_plan(data_dir=str(data_dir), tasks={"sharegpt4": {}, "alpaca": {}, "gsm8k": {}})
    assert plan.alpaca_samples("lota_sharegpt4_s90") == "work/samples/lota_sharegpt4_s90.jsonl"
    assert plan.alpaca_samples("fft_gsm8k") == "work/alpaca_eval/samples/fft_gsm8k.jsonl"


# --- the GPU presets ---------------------------------------------------------------------


def test_the_official_commonsense_sequence_preset_plans(data_dir, tmp_path):
    (data_dir / "gsm8k").symlink_to(SHARED_DATA / "gsm8k")
    presets = ("paper-gsm8k.yaml", "paper-commonsense-gpu.yaml")
    output = plan_preset(tmp_path / "run", "continual", *presets, data_dir=data_dir)
    jobs = planned_jobs(output)
    assert jobs["evaluate_sequence"] == 5 and jobs["train_stage"] == 5 and jobs["calibrate_stage"] == 2
    assert "results/cl/lottoflip_gsm8k-commonsense_170k_s99.json" in output
    for option in (
        "--task commonsense_170k",
        "--eval-size 1024 --valid-size 0 --eval-subset first --prompt-format alpaca",
        "--official-scoring gsm8k commonsense_170k",
        "--sparsity 0.99",
    ):
        assert option in output, option
    assert "--lr 1e-07" in output and "--epochs 1" in output  # the commonsense stage of the LoTA methods


def test_the_official_instruction_following_preset_plans(data_dir, tmp_path):
    (data_dir / "gsm8k").symlink_to(SHARED_DATA / "gsm8k")
    presets = ("paper-gsm8k.yaml", "paper-instruct-gpu.yaml")
    output = plan_preset(tmp_path / "run", "alpaca_eval", *presets, data_dir=data_dir)
    jobs = planned_jobs(output)
    assert jobs["evaluate_alpaca"] == 4 and jobs["generate"] == 4 and "generate_alpaca" not in jobs
    assert jobs["train_dense"] == 1 and jobs["train_lota"] == 1 and jobs["train_lora"] == 1
    for option in (
        "--prompt-format human_assistant",
        "--temperature 0.7 --top-p 0.9 --top-k 50",
        "--max-new-tokens 512",
        "--max-grad-norm 10.0",
    ):
        assert option in output, option
