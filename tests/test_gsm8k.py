from decimal import Decimal

import pytest

from lota.core.errors import UserError
from lota.tasks import get_task
from lota.tasks.gsm8k import extract_answer, gold_answer, score, to_example


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("She pays 3 * 4 = 12 dollars.\n#### 12", Decimal(12)),
        ("#### $1,234.50", Decimal("1234.50")),
        ("The answer is #### 72.", Decimal(72)),
        ("#### -5", Decimal(-5)),
        ("First 10, then 20, so the total is 30 apples.", Decimal(30)),
        ("It costs $18.", Decimal(18)),
        ("Total: 1,000,000", Decimal(1000000)),
        ("#### 7\nThen later I say 9", Decimal(7)),
        ("earlier 4 and 5, then ####", Decimal(5)),
        ("half is .5", Decimal("0.5")),
        ("no digits at all", None),
        ("The answer is:\n- 18", Decimal(18)),
        ("Steps:\n- 3 apples\n- 5 pears", Decimal(5)),
        ("ages 10-12", Decimal(12)),
        ("It is -7 degrees", Decimal(-7)),
        ("#### $ 40", Decimal(40)),
    ],
)
def test_extract_answer(completion, expected):
    assert extract_answer(completion) == expected


@pytest.mark.parametrize(
    ("completion", "gold", "correct"),
    [
        ("#### 18", "18", True),
        ("#### 18.00", "18", True),
        ("#### $18", "18", True),
        ("#### 1,800", "1800", True),
        ("so 18 eggs", "18", True),
        ("#### 17", "18", False),
        ("#### 18 and then 19", "18", True),
        ("nothing", "18", False),
        ("#### -3", "3", False),
    ],
)
def test_score(completion, gold, correct):
    assert score(completion, gold) is correct


def test_gold_answer_and_example():
    example = to_example({"question": " How many? ", "answer": "2 + 2 = <<2+2=4>>4\n#### 1,004"})
    assert example.question == "How many?"
    assert example.gold == "1004"
    assert example.response.endswith("#### 1,004")
    with pytest.raises(UserError, match="no '####' marker"):
        gold_answer("just 4")


def test_unknown_task_names_the_known_ones():
    with pytest.raises(UserError, match="unknown task 'gsm9k'; known tasks: .*gsm8k"):
        get_task("gsm9k")
