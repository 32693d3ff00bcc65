"""lm-evaluation-harness offline: task YAMLs over local files, and simple_evaluate on a tiny model."""

import json
from pathlib import Path

import pytest
import yaml

from lota.core.errors import UserError
from lota.evaluation.harness_tasks import LmEvalTasksArgs, write_offline_tasks
from lota.lmeval import LmEvalArgs, evaluate_harness, task_metrics
from lota.tasks.commonsense import multiple_choice, parse_multiple_choice
from tests.conftest import SHARED_DATA

ARC_RECORDS = [
    multiple_choice("Which gas do plants take in?", ["oxygen", "carbon dioxide", "helium"], 1),
    multiple_choice("What melts ice?", ["heat", "cold", "wind", "dark"], 0),
    multiple_choice("What do bees make?", ["milk", "honey"], 1),
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, gsm8k_dir):
    root = tmp_path_factory.mktemp("lmeval_data")
    (root / "gsm8k").symlink_to(gsm8k_dir / "gsm8k")
    (root / "arc_easy").mkdir()
    for split in ("train", "test"):
        (root / "arc_easy" / f"{split}.json").write_text(json.dumps(ARC_RECORDS))
    return root


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("lmeval_tasks") / "tasks"
    write_offline_tasks(LmEvalTasksArgs(tasks=["gsm8k", "arc_easy"], data_dir=data_dir, out=out))
    return out


def test_a_paper_format_question_parses_back_into_question_choices_and_answer():
    for record in ARC_RECORDS:
        question, choices, index = parse_multiple_choice(record)
        assert multiple_choice(question, choices, index) == record
    assert parse_multiple_choice(ARC_RECORDS[0]) == (
        "Which gas do plants take in?",
        ["oxygen", "carbon dioxide", "helium"],
        1,
    )
    local = json.loads((SHARED_DATA / "arc_challenge" / "test.json").read_text())[:50]
    assert all(multiple_choice(*parse_multiple_choice(record)) == record for record in local)
    for broken in ({**ARC_RECORDS[0], "answer": "answer7"}, {**ARC_RECORDS[0], "instruction": "Which gas?"}):
        with pytest.raises(UserError, match="not a multiple-choice question"):
            parse_multiple_choice(broken)


def test_offline_tasks_include_the_builtin_definitions_and_read_local_files(task_dir, data_dir):
    import lm_eval

    builtin = Path(lm_eval.__file__).parent / "tasks"
    gsm8k = yaml.safe_load((task_dir / "gsm8k.yaml").read_text())
    assert gsm8k == {
        "include": str(builtin / "gsm8k" / "gsm8k.yaml"),
        "task": "gsm8k",
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {
            "data_files": {split: str((data_dir / "gsm8k" / f"{split}.jsonl").resolve()) for split in ("train", "test")}
        },
    }
    arc = yaml.safe_load((task_dir / "arc_easy.yaml").read_text())
    assert arc["include"] == str(builtin / "arc" / "arc_easy.yaml")
    assert arc["validation_split"] is None  # no local validation file
    converted = task_dir.resolve() / "data" / "arc_easy" / "test.jsonl"
    assert arc["dataset_kwargs"]["data_files"]["test"] == str(converted)
    assert json.loads(converted.read_text().splitlines()[0]) == {
        "question": "Which gas do plants take in?",
        "choices": {"text": ["oxygen", "carbon dioxide", "helium"], "label": ["A", "B", "C"]},
        "answerKey": "B",
    }
    assert set(json.loads((task_dir / "tasks.json").read_text())) == {"gsm8k", "arc_easy"}


def test_the_harness_reads_the_offline_tasks_documents(task_dir, data_dir):
    from lm_eval.tasks import TaskManager

    tasks = TaskManager(include_path=str(task_dir), include_defaults=False).load(["gsm8k", "arc_easy"])["tasks"]
    gsm8k_test = [json.loads(line) for line in (data_dir / "gsm8k" / "test.jsonl").read_text().splitlines()]
    assert [doc["question"] for doc in tasks["gsm8k"].test_docs()] == [r["question"] for r in gsm8k_test]
    arc = tasks["arc_easy"]
    docs = list(arc.test_docs())
    assert [arc.doc_to_target(doc) for doc in docs] == [1, 0, 1]
    assert arc.doc_to_text(docs[1]) == "Question: What melts ice?\nAnswer:"
    assert arc.doc_to_choice(docs[2]) == ["milk", "honey"]


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        (["no_such_task"], "unknown lm-eval task 'no_such_task'"),
        (["hellaswag"], "lm-eval task 'hellaswag' reads Rowan/hellaswag .* no local copy"),
        (["ai2_arc"], "lm-eval 'ai2_arc' is a tag, not a task"),
        (["openbookqa"], r"openbookqa train data not found"),
        ([], "no lm-eval tasks given"),
    ],
)
def test_tasks_that_cannot_run_offline_are_refused_and_nothing_is_written(tmp_path, data_dir, tasks, message):
    with pytest.raises(UserError, match=message):
        write_offline_tasks(LmEvalTasksArgs(tasks=tasks, data_dir=data_dir, out=tmp_path / "tasks"))
    assert list(tmp_path.iterdir()) == []


def test_metrics_pair_each_value_with_its_standard_error():
    harness = {
        "alias": "gsm8k",
        "exact_match,strict-match": 0.25,
        "exact_match_stderr,strict-match": 0.1,
        "acc,none": 0.5,
        "acc_stderr,none": "N/A",
    }
    assert task_metrics(harness) == {
        "exact_match,strict-match": {"value": 0.25, "stderr": 0.1},
        "acc,none": {"value": 0.5, "stderr": None},
    }


def test_simple_evaluate_scores_a_model_on_the_offline_tasks(tmp_path, task_dir, tiny_model):
    args = LmEvalArgs(
        model=tiny_model,
        tasks=["arc_easy", "gsm8k"],
        out=tmp_path / "lmeval.json",
        task_dir=task_dir,
        limit=2,
        batch_size=2,
        backend="transformers",
        samples=tmp_path / "samples.jsonl",
        name="base_gsm8k",
        config_json='{"lmeval": {"limit": 2}}',
        threads=1,
    )
    evaluate_harness(args)
    result = json.loads(args.out.read_text())
    assert result["model"] == "base_gsm8k" and result["backend"] == "hf" and result["device"] == "cpu"
    assert result["harness"] == "lm-evaluation-harness" and result["harness_version"] == result["versions"]["lm_eval"]
    assert result["data"] == "local" and result["config"] == {"lmeval": {"limit": 2}}
    arc, gsm8k = result["tasks"]["arc_easy"], result["tasks"]["gsm8k"]
    assert (arc["n"], arc["n_total"], arc["num_fewshot"]) == (2, 3, 0)
    assert set(arc["metrics"]) == {"acc,none", "acc_norm,none"} and 0 <= arc["metrics"]["acc,none"]["value"] <= 1
    assert (gsm8k["n"], gsm8k["num_fewshot"]) == (2, 5)
    assert set(gsm8k["metrics"]) == {"exact_match,strict-match", "exact_match,flexible-extract"}
    items = [json.loads(line) for line in args.samples.read_text().splitlines()]
    assert {(item["task"], item["doc_id"]) for item in items} == {(t, i) for t in ("arc_easy", "gsm8k") for i in (0, 1)}


def test_bad_arguments_are_refused_before_loading_a_model(tmp_path, task_dir, tiny_model):
    args = LmEvalArgs(model=tiny_model, tasks=["arc_challenge"], out=tmp_path / "r.json", task_dir=task_dir)
    with pytest.raises(UserError, match="'arc_challenge' is not in the offline task folder"):
        evaluate_harness(args)
    with pytest.raises(UserError, match="limit must be >= 0, got -1"):
        evaluate_harness(LmEvalArgs(model=tiny_model, tasks=["gsm8k"], out=tmp_path / "r.json", limit=-1))
    with pytest.raises(UserError, match="lm-eval 'ai2_arc' is a tag, not a task"):  # the hub's tasks: checked too
        evaluate_harness(
            LmEvalArgs(model=tiny_model, tasks=["ai2_arc"], out=tmp_path / "r.json", backend="transformers")
        )
    with pytest.raises(UserError, match="backend 'vllm' requested but"):  # no vLLM, no GPU on this machine
        evaluate_harness(LmEvalArgs(model=tiny_model, tasks=["gsm8k"], out=tmp_path / "r.json", backend="vllm"))
    assert not (tmp_path / "r.json").exists()
