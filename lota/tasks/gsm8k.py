"""GSM8K grade-school math: the answer is the number after '####', scored numerically."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from lota.errors import UserError
from lota.io import read_jsonl
from lota.tasks import Example, Task, require_fields

HUB_ID = "openai/gsm8k"
# A minus sign counts only when nothing word-like precedes it: "- 18" is a bullet, "10-12" a range.
_NUMBER = re.compile(r"(?<![\w.])-?(?:\$\s?)?(?:\d[\d,]*(?:\.\d+)?|\.\d+)")


def load(split: str, data_dir: Path | None) -> list[dict[str, Any]]:
    if data_dir is not None:
        return read_jsonl(Path(data_dir) / "gsm8k" / f"{split}.jsonl", f"GSM8K {split} data")
    from lota.hub import load_hub_split

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


def extract_answer(completion: str) -> Decimal | None:
    """The number after the last '####' if there is one with a number, else the last number."""
    if "####" in completion:
        after = _NUMBER.search(completion.rsplit("####", 1)[1])
        if after:
            return parse_number(after.group())
    numbers = _NUMBER.findall(completion)
    return parse_number(numbers[-1]) if numbers else None


def score(completion: str, gold: str) -> bool:
    predicted, expected = extract_answer(completion), parse_number(gold)
    return predicted is not None and expected is not None and predicted == expected


TASK = Task(name="gsm8k", load=load, to_example=to_example, score=score, max_length=512, max_new_tokens=256)
