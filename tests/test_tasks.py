"""The task registry: local loaders on the shared data, hub converters, and the scorers."""

import pytest

from lota.core.errors import UserError
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
from lota.tasks.records import prepare_split
from tests.conftest import SHARED_DATA


def test_registry_lists_every_task_with_its_splits():
    names = set(task_names())
    builtin = {"gsm8k", "mawps", "alpaca", "sharegpt4", "commonsense", "commonsense_170k"}
    assert names == {*builtin, *(source.name for source in SOURCES)}
    assert get_task("piqa").splits == ("test",) and get_task("boolq").splits == ("train", "test")
    assert get_task("commonsense").subtasks == tuple(source.name for source in SOURCES)
    assert get_task("commonsense").data_folders() == get_task("commonsense").subtasks
    assert get_task("commonsense").optional_parts == get_task("commonsense_170k").optional_parts == ("hellaswag",)
    assert get_task("commonsense_170k").data_folders() == ("commonsense_170k", *get_task("commonsense").subtasks)


@pytest.mark.parametrize(
    ("completion", "gold", "label"),
    [
        ("the correct answer is answer2", "answer1", "answer2"),
        ("The correct answer is Answer3.", "answer3", "answer3"),
        ("Solution1 is right, not solution2", "solution2", "solution1"),
        ("I think option2", "option2", "option2"),
        ("The statement is FALSE.", "true", "false"),
        ("It is true that plants grow; the correct answer is answer2", "answer2", "answer2"),
        ("that is untrue, a falsehood", "true", None),
        ("answer12 or answer 2", "answer2", None),
        ("no idea", "answer1", None),
    ],
)
def test_the_first_label_of_the_datasets_kind_is_extracted(completion, gold, label):
    assert extract_label(completion, gold) == label


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
    present = [source for source in SOURCES if not source.optional]  # the shared data has no HellaSwag
    first_test = {source.name: get_task(source.name).load("test", SHARED_DATA)[0] for source in present}
    hub_records = {
        "openbookqa": from_openbookqa(
            {
                "question_stem": "A person wants to start saving money so that they can afford a nice vacation at the "
                "end of the year. After looking over their budget and expenses, they decide the best way to save "
                "money is to",
                "choices": {
                    "text": [
                        "make more phone calls",
                        "quit eating lunch out",
                        "buy less with monopoly money",
                        "have lunch with friends",
                    ],
                    "label": ["A", "B", "C", "D"],
                },
                "answerKey": "B",
            }
        ),
        "boolq": from_boolq({"question": "does ethanol take more energy make that produces", "answer": False}),
        "piqa": from_piqa(
            {
                "goal": "How do I ready a guinea pig cage for it's new occupants?",
                "sol1": "Provide the guinea pig with a cage full of a few inches of bedding made of ripped paper "
                "strips, you will also need to supply it with a water bottle and a food dish.",
                "sol2": "Provide the guinea pig with a cage full of a few inches of bedding made of ripped jeans "
                "material, you will also need to supply it with a water bottle and a food dish.",
                "label": 0,
            }
        ),
        "social_i_qa": from_social_i_qa(
            {
                "context": "Tracy didn't go home that evening and resisted Riley's attacks.",
                "question": "What does Tracy need to do before this?",
                "answerA": "make a new plan",
                "answerB": "Go home and see Riley",
                "answerC": "Find somewhere to go",
                "label": "3",
            }
        ),
        "winogrande": from_winogrande(
            {
                "sentence": "Sarah was a much better surgeon than Maria so _ always got the easier cases.",
                "option1": "Sarah",
                "option2": "Maria",
                "answer": "2",
            }
        ),
    }
    for name, converted in hub_records.items():
        assert converted | {"subtask": name} == first_test[name], name
    with pytest.raises(UserError, match="BoolQ hub record lacks the field 'answer'"):
        from_boolq({"question": "q"})


def test_combined_commonsense_mixes_training_sets_and_evaluates_each_subtask(smol_tokenizer):
    task = get_task("commonsense")
    train = prepare_split("commonsense", "train", SHARED_DATA, smol_tokenizer, size=200, seed=0)
    assert {record["subtask"] for record in train} == {"arc_challenge", "arc_easy", "boolq", "openbookqa"}
    evaluation = prepare_split("commonsense", "test", SHARED_DATA, smol_tokenizer, size=3, seed=0)
    # HellaSwag, whose folder the shared data lacks, is left out.
    scored = [name for name in task.subtasks if name != "hellaswag"]
    assert [record["subtask"] for record in evaluation] == [name for name in scored for _ in range(3)]
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
    unknown_inside = mawps_example({"original_text": "q", "equation": "X-6.0=52", "ans": 58.0})
    assert unknown_inside.response == "X-6=52, so x = 58\n#### 58"
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


def test_alpaca_trains_on_alpaca_and_answers_alpaca_eval(smol_tokenizer):
    task = get_task("alpaca")
    assert task.score is None and task.data_folders() == ("alpaca", "alpaca_eval")
    evaluation = prepare_split("alpaca", "test", SHARED_DATA, smol_tokenizer, size=0, seed=0)
    assert len(evaluation) == 805 and evaluation[0]["gold"] and evaluation[0]["subtask"] == "alpaca"
    example = task.to_example({"instruction": "Say hi.", "input": "to Bob", "output": " Hi Bob. "})
    assert (example.question, example.response) == ("Say hi.\n\nto Bob", "Hi Bob.")
