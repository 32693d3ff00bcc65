"""The task registry: local loaders on the shared data, hub converters, and the scorers."""

import pytest

from lota.errors import UserError
from lota.prepare_data import prepare_split
from lota.tasks import get_task, task_names
from lota.tasks.commonsense import (
    SOURCES,
    extract_label,
    from_arc,
    from_boolq,
    from_openbookqa,
    from_piqa,
    from_social_i_qa,
    from_winogrande,
)
from lota.tasks.mawps import format_number
from lota.tasks.mawps import score as score_mawps
from lota.tasks.mawps import to_example as mawps_example
from tests.conftest import SHARED_DATA


def test_registry_lists_every_task_with_its_lengths():
    names = set(task_names())
    assert {"gsm8k", "mawps", "alpaca", "commonsense", *(source.name for source in SOURCES)} <= names
    for name in names:
        task = get_task(name)
        assert task.max_length > 0 and task.max_new_tokens > 0 and task.splits
    assert get_task("piqa").splits == ("test",) and get_task("commonsense").subtasks[-1] == "winogrande"


@pytest.mark.parametrize(
    ("completion", "label"),
    [
        ("the correct answer is answer2", "answer2"),
        ("The correct answer is Answer3.", "answer3"),
        ("Solution1 is right, not solution2", "solution1"),
        ("I think option2", "option2"),
        ("The statement is FALSE.", "false"),
        ("answer 2", None),
        ("no idea", None),
    ],
)
def test_the_first_choice_label_named_is_extracted(completion, label):
    assert extract_label(completion) == label


def test_commonsense_scores_the_label_exactly():
    task = get_task("arc_easy")
    assert task.score("the correct answer is answer1", "answer1")
    assert not task.score("the correct answer is answer1", "answer2")
    assert not task.score("answer1 or answer2, the correct answer is answer2", "answer2")


def test_local_commonsense_records_become_examples():
    task = get_task("boolq")
    example = task.to_example(task.load("train", SHARED_DATA)[0])
    assert example.subtask == "boolq" and example.gold in ("true", "false")
    assert example.response == f"the correct answer is {example.gold}"
    assert example.question.endswith("Answer format: true/false")
    with pytest.raises(UserError, match="piqa is evaluation-only: it has no train split"):
        get_task("piqa").load("train", SHARED_DATA)
    with pytest.raises(UserError, match="not a choice label"):
        task.to_example({"instruction": "q", "output": "o", "answer": "maybe", "subtask": "boolq"})


def test_hub_records_convert_to_the_local_format():
    local = get_task("arc_challenge").load("train", SHARED_DATA)[0]
    hub = {
        "question": "George wants to warm his hands quickly by rubbing them. Which skin surface will produce the "
        "most heat?",
        "choices": {
            "text": ["dry palms", "wet palms", "palms covered with oil", "palms covered with lotion"],
            "label": ["A", "B", "C", "D"],
        },
        "answerKey": "A",
    }
    assert from_arc(hub) | {"subtask": "arc_challenge"} == local
    obqa = from_openbookqa(
        {"question_stem": "The sun is", "choices": {"text": ["a", "b"], "label": ["1", "2"]}, "answerKey": "2"}
    )
    assert (
        obqa["answer"] == "answer2" and "Answer1: a Answer2: b\n\nAnswer format: answer1/answer2" in obqa["instruction"]
    )
    assert from_boolq({"question": "is it", "answer": False})["output"] == "the correct answer is false"
    piqa = from_piqa({"goal": "g", "sol1": "x", "sol2": "y", "label": 1})
    assert piqa["answer"] == "solution2" and piqa["instruction"].endswith("Answer format: solution1/solution2")
    siqa = from_social_i_qa(
        {"context": "Tracy left.", "question": "Why?", "answerA": "a", "answerB": "b", "answerC": "c", "label": "3"}
    )
    assert siqa["answer"] == "answer3" and "question: Tracy left. Why?" in siqa["instruction"]
    assert from_winogrande({"sentence": "_ won", "option1": "A", "option2": "B", "answer": "2"})["answer"] == "option2"
    with pytest.raises(UserError, match="BoolQ hub record lacks the field 'answer'"):
        from_boolq({"question": "q"})


def test_combined_commonsense_mixes_training_sets_and_evaluates_each_subtask(smol_tokenizer):
    task = get_task("commonsense")
    train = prepare_split("commonsense", "train", SHARED_DATA, smol_tokenizer, size=200, seed=0)
    assert {record["subtask"] for record in train} == {"arc_challenge", "arc_easy", "boolq", "openbookqa"}
    evaluation = prepare_split("commonsense", "test", SHARED_DATA, smol_tokenizer, size=3, seed=0)
    assert [record["subtask"] for record in evaluation] == [name for name in task.subtasks for _ in range(3)]
    assert prepare_split("piqa", "train", SHARED_DATA, smol_tokenizer, size=3, seed=0) == []


@pytest.mark.parametrize(("value", "text"), [(2.0, "2"), (12, "12"), ("1.8333333333333335", "1.83"), (0.375, "0.38")])
def test_mawps_numbers_are_written_as_people_write_them(value, text):
    assert format_number(value) == text


def test_mawps_examples_show_the_equation_and_the_answer():
    example = mawps_example(
        {
            "original_text": "Alyssa 's dog had 7 puppies . She paid $ 5 , then ?",
            "equation": "X=((22.0-14.0)/4.0)",
            "ans": "2",
        }
    )
    assert example.question == "Alyssa's dog had 7 puppies. She paid $5, then?"
    assert example.response == "((22-14)/4) = 2\n#### 2" and example.gold == "2"
    assert len(get_task("mawps").load("test", SHARED_DATA)) == 238
    with pytest.raises(UserError, match="not a number"):
        mawps_example({"original_text": "q", "equation": "X=1", "ans": "n/a"})


@pytest.mark.parametrize(
    ("completion", "gold", "correct"),
    [
        ("3 - 1.1666 = 1.83\n#### 1.83", "1.83", True),
        ("so 1.8333 in all", "1.83", True),
        ("#### 2", "1.83", False),
        ("#### 12.0", "12", True),
        ("#### 1e400", "12", False),
        ("nothing", "12", False),
    ],
)
def test_mawps_answers_match_to_two_decimals(completion, gold, correct):
    assert score_mawps(completion, gold) is correct
