"""Where the hub datasets that lm-evaluation-harness's task definitions name lie in the local data
folder, and how a local record becomes the hub's: the table the lmeval_tasks stage builds its
offline tasks from and the workflow reads to know which local files they depend on.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lota.tasks.commonsense import parse_multiple_choice


def lettered(question_key: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A paper-format multiple-choice record as an ARC / OpenBookQA hub record."""

    def convert(record: dict[str, Any]) -> dict[str, Any]:
        question, choices, index = parse_multiple_choice(record)
        labels = list(string.ascii_uppercase[: len(choices)])
        return {question_key: question, "choices": {"text": choices, "label": labels}, "answerKey": labels[index]}

    return convert


@dataclass(frozen=True)
class LocalDataset:
    """A hub dataset's local copy: its folder, the local file of each hub split, and how a local
    record becomes a hub record (None: the local records are the hub's)."""

    folder: str
    files: dict[str, str]
    to_hub: Callable[[dict[str, Any]], dict[str, Any]] | None = None


# Keyed by the (dataset_path, dataset_name) that the harness's task definitions name.
LOCAL_DATASETS = {
    ("openai/gsm8k", "main"): LocalDataset("gsm8k", {"train": "train.jsonl", "test": "test.jsonl"}),
    ("allenai/ai2_arc", "ARC-Easy"): LocalDataset(
        "arc_easy", {"train": "train.json", "test": "test.json"}, lettered("question")
    ),
    ("allenai/ai2_arc", "ARC-Challenge"): LocalDataset(
        "arc_challenge", {"train": "train.json", "test": "test.json"}, lettered("question")
    ),
    ("allenai/openbookqa", "main"): LocalDataset(
        "openbookqa", {"train": "train.json", "test": "test.json"}, lettered("question_stem")
    ),
}
