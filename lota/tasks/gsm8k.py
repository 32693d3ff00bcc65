"""GSM8K grade-school math: the answer is the number after '####', scored numerically.

`official_score` is the official LoTA code's reading instead: the number after "The final
answer is: ", compared as a float.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from lota.core.errors import UserError
from lota.core.io import read_jsonl
from lota.tasks import Example, Task, require_fields

HUB_ID = "openai/gsm8k"
# A minus sign counts only when nothing word-like precedes it: "- 18" is a bullet, "10-12" a range.
_NUMBER = re.compile(r"(?<![\w.])-?(?:\$\s?)?(?:\d[\d,]*(?:\.\d+)?|\.\d+)")
# The official LoTA code's answer marker (its ANSWER_PROMPT): its targets write the answer after
# it, and its scorer reads the number that follows it.
OFFICIAL_ANSWER_MARKER = "The final answer is: "
# The official code's number: no lookbehind, so "10-12" reads as 10 and -12.
_OFFICIAL_NUMBER = re.compile(r"-?\d+\.?\d*")


def load(split: str, data_dir: Path | None) -> list[dict[str, Any]]:
    if data_dir is not None:
        return read_jsonl(Path(data_dir) / "gsm8k" / f"{split}.jsonl", f"GSM8K {split} data")
    from lota.core.hub import load_hub_split

    return load_hub_split(HUB_ID, "main", split)


def to_example(record: dict[str, Any]) -> Example:
    question, answer = require_fields(record, ("question", "answer"), "GSM8K")
    if not isinstance(question, str) or not isinstance(answer, str):
        raise UserError("GSM8K record fields 'question' and 'answer' must be strings")
    gold = gold_answer(answer)
    return Example(question=question.strip(), response=answer.strip(), gold=gold, subtask="gsm8k")


def gold_answer(answer: str) -> str:
    if "####" not in answer:
        raise UserError(f"GSM8K answer has no '####' marker: {answer[-60:]!r}")
    return answer.rsplit("####", 1)[1].strip().replace(",", "")


def parse_number(text: str) -> Decimal | None:
    """The value of a number written with optional '$', thousands commas and a trailing '.'."""
    cleaned = text.replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    try:
        return Decimal(cleaned)
    except InvalidOperation:
        return None


def last_number(text: str) -> Decimal | None:
    """The value of the text's last number ('$1,200.' reads 1200), or None."""
    numbers = _NUMBER.findall(text)
    return parse_number(numbers[-1]) if numbers else None


def extract_answer(completion: str) -> Decimal | None:
    """The number after the last '####' if there is one with a number, else the last number."""
    if "####" in completion:
        after = _NUMBER.search(completion.rsplit("####", 1)[1])
        if after:
            return parse_number(after.group())
    return last_number(completion)


def score(completion: str, gold: str) -> bool:
    predicted, expected = extract_answer(completion), parse_number(gold)
    return predicted is not None and expected is not None and predicted == expected


def official_answer(text: str) -> float:
    """The official code's reading (extract_answer_gsm8k): with commas removed, the first number
    between the first OFFICIAL_ANSWER_MARKER and the next one, else the text's last number; inf
    when the text has no number."""
    text = text.replace(",", "")
    numbers = _OFFICIAL_NUMBER.findall(text)
    if not numbers:
        return math.inf
    segments = text.split(OFFICIAL_ANSWER_MARKER)
    after_marker = _OFFICIAL_NUMBER.findall(segments[1]) if len(segments) > 1 else []
    return float(after_marker[0] if after_marker else numbers[-1])


def official_score(text: str, gold: str) -> bool:
    """The official accuracy: the text's reading equals the gold's as floats (the official code
    reads its target text the same way, which gives the gold's number)."""
    return official_answer(text) == official_answer(gold)


TASK = Task(
    name="gsm8k",
    load=load,
    to_example=to_example,
    score=score,
    max_length=512,
    max_new_tokens=256,
    official_score=official_score,
    hub_datasets=(HUB_ID,),
)
