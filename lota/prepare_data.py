"""Stage prepare_data: a task's splits as normalized JSONL records (lota.tasks.records), deterministic
subsets by seed: the training and validation records by --train-seed and --seed, the evaluation
records by --seed, all built before any is written."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lota.core.cli import arg, run_main, task_definitions_arg, trust_remote_code_arg
from lota.core.errors import UserError
from lota.core.io import atomic_path, write_jsonl
from lota.core.modeling import load_tokenizer
from lota.tasks import get_task
from lota.tasks.defined import parse_task_definitions
from lota.tasks.formats import PROMPT_FORMATS, TARGET_FORMATS
from lota.tasks.records import DATA_DIR_ENV, TextFormat, prepare_split, resolve_data_dir, to_record, training_splits

log = logging.getLogger("lota.prepare_data")
EVAL_SUBSETS = ("random", "first")


@dataclass
class PrepareDataArgs:
    task: str = arg(help="task name from the registry, e.g. gsm8k")
    tokenizer: Path = arg(help="model directory whose tokenizer (and chat template) formats prompts")
    train_out: Path | None = arg(None, "output JSONL of training records")
    eval_out: Path | None = arg(None, "output JSONL of evaluation records")
    valid_out: Path | None = arg(None, "output JSONL of validation records")
    data_dir: Path | None = arg(None, f"local task data folder; default ${DATA_DIR_ENV}, else the hub")
    train_size: int = arg(0, "training records to keep (a seeded random subset); 0 keeps all")
    eval_size: int = arg(0, "evaluation records to keep (a seeded random subset); 0 keeps all")
    valid_size: int = arg(
        0, "validation records (a seeded subset, carved from training without a validation split); 0: none"
    )
    seed: int = arg(0, "seed of the evaluation and validation subsets")
    train_seed: int | None = arg(None, "seed of the training subset and its order (a replicate's); default --seed")
    eval_subset: Literal[EVAL_SUBSETS] = arg(
        "random", "which eval_size evaluation records: a seeded random subset, or the first ones (the official code's)"
    )
    prompt_format: Literal[PROMPT_FORMATS] = arg(
        "chat",
        "the chat template, or the official code's plain-text (GSM8K), Alpaca (commonsense) or Human/Assistant format",
    )
    target_format: Literal[TARGET_FORMATS] = arg(
        "lota", "the data's response, or the official code's (GSM8K's '####' becomes 'The final answer is: ')"
    )
    require_chat_template: bool = arg(False, "fail if the tokenizer has no chat template (prompt format chat)")
    task_definitions: str = task_definitions_arg()
    trust_remote_code: bool = trust_remote_code_arg()


def run(args: PrepareDataArgs) -> None:
    """Write a task's training, validation and evaluation records (those asked for) as normalized JSONL."""
    definitions = parse_task_definitions(args.task_definitions)
    task = get_task(args.task, definitions)
    outputs = {"train": args.train_out, "valid": args.valid_out, "test": args.eval_out}
    if not any(outputs.values()):
        raise UserError("prepare_data writes nothing: give --train-out, --valid-out or --eval-out")
    data_dir = resolve_data_dir(args.data_dir)
    tokenizer = load_tokenizer(args.tokenizer, args.trust_remote_code)
    if tokenizer.eos_token is None:
        raise UserError(f"the tokenizer in {args.tokenizer} has no end-of-sequence token to end responses with")
    train_seed = args.seed if args.train_seed is None else args.train_seed
    text = TextFormat(args.prompt_format, args.target_format, args.require_chat_template)
    # Every split is built before any is written, so bad data leaves no output at all; and all
    # are published together, so an output that cannot be written leaves none.
    chosen: dict[str, list[dict[str, Any]]] = {}
    if args.train_out or args.valid_out:
        splits = training_splits(
            args.task, data_dir, args.train_size, args.valid_size, args.seed, train_seed, definitions
        )
        for split, examples in zip(("train", "valid"), splits, strict=True):
            chosen[split] = [to_record(i, example, tokenizer, text, split == "train") for i, example in examples]
    if args.eval_out:
        chosen["test"] = prepare_split(
            args.task, "test", data_dir, tokenizer, args.eval_size, args.seed, text, args.eval_subset, definitions
        )
    prepared = [(split, outputs[split], records) for split, records in chosen.items() if outputs[split]]
    with contextlib.ExitStack() as outputs:
        for _, out, records in prepared:
            write_jsonl(outputs.enter_context(atomic_path(out)), records)
    for split, out, records in prepared:
        log.info("%s %s: %d records -> %s", args.task, split, len(records), out)
        if split == "train" and "train" not in task.splits:
            log.info("%s is evaluation-only: %s is left empty", args.task, out)


if __name__ == "__main__":
    run_main(PrepareDataArgs, run)
