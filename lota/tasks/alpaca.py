"""Instruction following: Alpaca to train on, AlpacaEval's 805 instructions to answer. There is
no built-in scorer: completions are judged against the reference outputs (gold) by AlpacaEval.

The local copy is the 5000-example subset; the hub has the full 52k, so the same train_size
and seed pick different records from the two.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lota.tasks import Example, Task, read_json_records, require_fields, with_input

LOCAL_FILES = {"train": ("alpaca", "alpaca_5000.json"), "test": ("alpaca_eval", "gpt4_1106_preview_outputs.json")}
# AlpacaEval 2's instructions with its reference outputs (GPT-4 Turbo's), as the local file holds them;
# the hub's "alpaca_eval" config is AlpacaEval 1's (text-davinci-003's outputs).
HUB_SPLITS = {
    "train": ("tatsu-lab/alpaca", None, "train"),
    "test": ("tatsu-lab/alpaca_eval", "alpaca_eval_gpt4_baseline", "eval"),
}


def load(split: str, data_dir: Path | None) -> list[dict[str, Any]]:
    if data_dir is not None:
        folder, name = LOCAL_FILES[split]
        return read_json_records(Path(data_dir) / folder / name, f"alpaca {split} data")
    from lota.core.hub import load_hub_split

    return load_hub_split(*HUB_SPLITS[split])


def to_example(record: dict[str, Any]) -> Example:
    instruction, output = require_fields(record, ("instruction", "output"), "alpaca")
    question = with_input(instruction, record.get("input"))
    return Example(question=question.strip(), response=output.strip(), gold=output.strip(), subtask="alpaca")


TASK = Task(
    name="alpaca",
    load=load,
    to_example=to_example,
    score=None,
    max_length=512,
    max_new_tokens=512,
    folders=("alpaca", "alpaca_eval"),
    hub_datasets=tuple(hub_id for hub_id, _, _ in HUB_SPLITS.values()),
)
