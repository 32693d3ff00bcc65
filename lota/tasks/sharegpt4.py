"""Instruction following as the official LoTA code trains it: ShareGPT4, the first human turns of
ShareGPT conversations with GPT-4's completions (the official `sharegpt4` data, from the hub's
TRI-ML/dpo-rlaif-data), to train on; AlpacaEval's 805 instructions to answer, judged by AlpacaEval
as task `alpaca`'s are. No built-in scorer.

The file is a JSON object of instruction -> [completion]; the official loader keeps each
instruction's first completion as the target, instruction and completion verbatim.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lota.core.errors import UserError
from lota.tasks import Example, Task, alpaca, require_fields

HUB_REPO = "TRI-ML/dpo-rlaif-data"
FILE = "sharegpt1turn_df1.0_ff0_gpt4_completions.json"
FOLDER = "sharegpt4"


def records(completions: Any, source: str) -> list[dict[str, Any]]:
    """The file's instructions with their first completions, in its order."""
    if not isinstance(completions, dict) or not completions:
        raise UserError(f"{source} must hold a JSON object of instruction to a list of completions")
    for instruction, outputs in completions.items():
        if not (isinstance(outputs, list) and outputs and isinstance(outputs[0], str)):
            raise UserError(f"{source}: the instruction {instruction[:40]!r} has no completion (a list of strings)")
    return [{"instruction": instruction, "output": outputs[0]} for instruction, outputs in completions.items()]


def load(split: str, data_dir: Path | None) -> list[dict[str, Any]]:
    if split == "test":
        return alpaca.load(split, data_dir)
    if data_dir is not None:
        from lota.core.io import read_json

        path = Path(data_dir) / FOLDER / FILE
        return records(read_json(path, "ShareGPT4 training data"), str(path))
    from lota.core.hub import load_hub_json

    return records(load_hub_json(HUB_REPO, FILE), f"{HUB_REPO}/{FILE}")


def to_example(record: dict[str, Any]) -> Example:
    instruction, output = require_fields(record, ("instruction", "output"), "ShareGPT4")
    return Example(question=instruction, response=output, gold=output, subtask=FOLDER)


TASK = Task(
    name="sharegpt4",
    load=load,
    to_example=to_example,
    score=None,
    max_length=512,
    max_new_tokens=512,
    folders=(FOLDER, alpaca.LOCAL_FILES["test"][0]),  # and AlpacaEval's folder
    hub_datasets=(HUB_REPO, alpaca.HUB_SPLITS["test"][0]),
)
