"""MAWPS arithmetic word problems (one and two steps). The response is the problem's equation
with its value, then '#### <answer>' as in GSM8K; answers are compared to two decimals."""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from lota.core.errors import UserError
from lota.tasks import Example, Task, read_json_records, require_fields
from lota.tasks.gsm8k import extract_answer, official_score

# The LoTA paper's copy ships train/valid/test files; there is no hub copy in this format.
SPLIT_FILES = {"train": "trainset.json", "valid": "validset.json", "test": "testset.json"}
_WHOLE_FLOAT = re.compile(r"(\d)\.0+\b")
_HUNDREDTH = Decimal("0.01")


def load(split: str, data_dir: Path | None) -> list[dict[str, Any]]:
    if data_dir is None:
        raise UserError("task mawps has no hub copy: set config data_dir (or $LOTA_DATA_DIR) to a folder with mawps/")
    return read_json_records(Path(data_dir) / "mawps" / SPLIT_FILES[split], f"MAWPS {split} data")


def format_number(value: float | Decimal) -> str:
    """A value as people write it: 12, 1.83 (two decimals at most, trailing zeros dropped)."""
    text = f"{Decimal(str(value)).quantize(_HUNDREDTH, ROUND_HALF_UP):f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def to_example(record: dict[str, Any]) -> Example:
    question, equation, answer = require_fields(record, ("original_text", "equation", "ans"), "MAWPS")
    if not isinstance(question, str) or not isinstance(equation, str):
        raise UserError("MAWPS record needs string fields 'original_text' and 'equation'")
    try:
        gold = format_number(Decimal(str(answer)))
    except InvalidOperation:
        raise UserError(f"MAWPS record has the answer {answer!r}, not a number") from None
    # The working the model learns to write out: "X=((22.0-14.0)/4.0)" -> "((22-14)/4) = 2"; an
    # equation with the unknown inside, "X-6=52", -> "X-6=52, so x = 58".
    cleaned = _WHOLE_FLOAT.sub(r"\1", equation.strip())
    unknown, _, expression = cleaned.partition("=")
    solved = re.fullmatch(r"[A-Za-z]+", unknown.strip()) and "=" not in expression
    working = f"{expression.strip()} = {gold}" if solved else f"{cleaned}, so x = {gold}"
    # The data separates tokens with spaces ("section . If", "Alyssa 's", "$ 11"); show it as written.
    question = re.sub(r" ([.,?!;:]|'s\b|n't\b)", r"\1", question.strip()).replace("$ ", "$")
    return Example(question=question, response=f"{working}\n#### {gold}", gold=gold, subtask="mawps")


def score(completion: str, gold: str) -> bool:
    """The extracted number equals the gold answer when both are rounded to two decimals."""
    predicted = extract_answer(completion)
    if predicted is None:
        return False
    try:
        return predicted.quantize(_HUNDREDTH, ROUND_HALF_UP) == Decimal(gold).quantize(_HUNDREDTH, ROUND_HALF_UP)
    except InvalidOperation:  # a number too long to round to hundredths
        return False


TASK = Task(
    "mawps",
    load,
    to_example,
    score,
    max_length=256,
    max_new_tokens=64,
    splits=tuple(SPLIT_FILES),
    # The official code has no MAWPS evaluation; under its protocol a numeric-answer task like
    # MAWPS is scored by its GSM8K rule.
    official_score=official_score,
)
