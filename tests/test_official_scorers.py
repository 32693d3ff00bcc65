"""The official LoTA code's scorers (rlaif/eval_model_all.py), ported beside lota's own: each case's
expected value is what the official extract_answer_gsm8k / extract_answer_commonsense and their
p == g accuracy give. The official code scores the prompt followed by the completion."""

from __future__ import annotations

import math

import pytest

from lota.tasks import get_task, gsm8k, mawps, task_names
from lota.tasks.commonsense import SOURCES, official_label
from lota.tasks.commonsense import official_score as commonsense_official_score
from lota.tasks.commonsense import score as commonsense_score
from lota.tasks.gsm8k import OFFICIAL_ANSWER_MARKER, official_answer
from lota.tasks.gsm8k import official_score as gsm8k_official_score
from lota.tasks.gsm8k import score as gsm8k_score

GSM8K_PROMPT = "Question: Ann has 12 apples and eats none. How many apples does she have?\nAnswer: "


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("She has 12 apples. The final answer is: 12", 12.0),
        ("The final answer is: 1,000", 1000.0),
        ("The final answer is: 3.50", 3.5),
        ("The final answer is: $18", 18.0),
        ("The final answer is: 72.", 72.0),  # "72." is one number, read as 72
        ("The final answer is: -5", -5.0),
        # The regex has no lookbehind: "10-12" is 10 and -12.
        ("The final answer is: 10-12", 10.0),
        ("ages 10-12", -12.0),
        # No marker: the last number.
        ("3 + 4 = 7, so 7 in all, then 9", 9.0),
        # A marker with no number after it: the last number of the whole text.
        ("I get 5 then 6. The final answer is: six", 6.0),
        # Several markers: the first number after the first one.
        ("The final answer is: 7. The final answer is: 9", 7.0),
        # segment[1] is only the text between the first and second markers, so the 9 after the
        # second one is not taken: the last number of the whole text decides.
        ("The final answer is: unsure\nThe final answer is: 9\nfrom 3 bags", 3.0),
        # lota's '####' means nothing here: the last number decides.
        ("#### 7 and then 9", 9.0),
        # A leading point is dropped: ".5" reads as 5.
        ("The final answer is: .5", 5.0),
    ],
)
def test_official_gsm8k_reading(completion, expected):
    assert official_answer(GSM8K_PROMPT + completion) == expected


@pytest.mark.parametrize(
    ("completion", "gold", "correct"),
    [
        ("She has 12 apples. The final answer is: 12", "12", True),
        ("The final answer is: 1,000", "1000", True),
        ("The final answer is: 3.50", "3.5", True),
        ("The final answer is: 72.", "72", True),
        ("The final answer is: -5", "-5", True),
        ("The final answer is: -5", "5", False),
        ("The final answer is: 10-12", "10", True),
        ("ages 10-12", "12", False),
        ("I get 5 then 6. The final answer is: six", "6", True),
        ("The final answer is: 7. The final answer is: 9", "7", True),
        ("The final answer is: unsure\nThe final answer is: 9\nfrom 3 bags", "9", False),
        ("#### 7 and then 9", "7", False),
        ("The final answer is: .5", "0.5", False),
        # No number in the completion: the question's last number is read, here the gold (quirk).
        ("I do not know.", "12", True),
    ],
)
def test_official_gsm8k_score(completion, gold, correct):
    assert gsm8k_official_score(GSM8K_PROMPT + completion, gold) is correct


def test_official_gsm8k_without_any_number_is_wrong():
    text = "Question: How many apples does Ann have?\nAnswer: I cannot say."
    assert official_answer(text) == math.inf
    assert not gsm8k_official_score(text, "12")


def test_lota_gsm8k_score_is_unchanged():
    # lota reads the number after '####' and ignores the official marker.
    assert gsm8k_score("#### 7 and then 9", "7")
    assert not gsm8k_score("The final answer is: 7 and then 9", "7")
    assert gsm8k_official_score("The final answer is: 7 and then 9", "7")
    assert gsm8k_score("ages 10-12", "12")
    assert not gsm8k_score("I do not know.", "12")
    assert OFFICIAL_ANSWER_MARKER == "The final answer is: "


COMMONSENSE_PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\nPlease choose the correct answer to the question: Where do fish live?\n\n"
    "Answer1: water Answer2: trees Answer3: sand\n\nAnswer format: answer1/answer2/answer3\n\n### Response:\n"
)


@pytest.mark.parametrize(
    ("completion", "gold", "label"),
    [
        ("the correct answer is answer1", "answer1", "answer1"),
        # Case-sensitive: "Answer2" is not a label, though lota reads it.
        ("The correct answer is Answer2.", "answer2", ""),
        # Labels in the prompt before "### Response:" are ignored.
        ("I am not sure.", "answer1", ""),
        # The first label wins.
        ("answer1 or answer2, the correct answer is answer2", "answer2", "answer1"),
        # Within words: "answer12" names answer1.
        ("answer12", "answer2", "answer1"),
        # Commas are removed first.
        ("the correct answer is answer,3", "answer3", "answer3"),
    ],
)
def test_official_commonsense_reading_after_the_response_marker(completion, gold, label):
    assert official_label(COMMONSENSE_PROMPT + completion, gold) == label


@pytest.mark.parametrize(
    ("text", "gold", "label"),
    [
        ("### Response:\nthe correct answer is false", "true", "false"),
        # Within words: "untrue" names true.
        ("### Response:\nthat is untrue", "true", "true"),
        ("### Response:\nthe correct answer is solution2", "solution1", "solution2"),
        ("### Response:\nthe correct answer is answer5", "answer5", "answer5"),
        ("### Response:\nthe correct answer is ending3", "ending3", "ending3"),
        ("### Response:\nthe correct answer is option1", "option2", "option1"),
        # Only the gold's family counts: answer2 is not a winogrande label.
        ("### Response:\nanswer2, so option2", "option2", "option2"),
        ("### Response:\nt,rue", "false", "true"),
        # The text after the last marker is read.
        ("### Response:\nanswer1\n### Response:\nanswer3", "answer3", "answer3"),
    ],
)
def test_official_commonsense_families(text, gold, label):
    assert official_label(text, gold) == label


def test_official_commonsense_score():
    assert commonsense_official_score(COMMONSENSE_PROMPT + "the correct answer is answer1", "answer1")
    assert not commonsense_official_score(COMMONSENSE_PROMPT + "the correct answer is answer1", "answer2")
    assert not commonsense_official_score(COMMONSENSE_PROMPT + "The correct answer is Answer2.", "answer2")
    assert commonsense_official_score("### Response:\nthat is untrue", "true")
    # Without "### Response:" the prompt's labels count: "answer1/answer2" comes first (quirk).
    prompt_without_marker = "Answer format: answer1/answer2\n\nthe correct answer is answer2"
    assert commonsense_official_score(prompt_without_marker, "answer1")
    assert not commonsense_official_score(prompt_without_marker, "answer2")


def test_lota_commonsense_score_is_unchanged():
    assert commonsense_score("The correct answer is Answer2.", "answer2")
    assert not commonsense_score("that is untrue", "true")


def test_mawps_is_scored_by_the_official_gsm8k_rule():
    assert get_task("mawps").official_score is gsm8k.official_score
    assert mawps.official_score("X=(11/6)\nThe final answer is: 1.83", "1.83")
    # Float equality, where lota's MAWPS score rounds both to two decimals.
    assert not mawps.official_score("The final answer is: 1.833", "1.83")
    assert mawps.score("#### 1.833", "1.83")


def test_every_task_has_its_official_scorer():
    assert get_task("gsm8k").official_score is gsm8k.official_score
    assert get_task("alpaca").official_score is None
    commonsense_tasks = {"commonsense", *(source.name for source in SOURCES)}
    assert commonsense_tasks <= set(task_names())
    for name in commonsense_tasks:
        assert get_task(name).official_score is commonsense_official_score
