"""Stage preference_data: a small preference set {prompt, chosen, rejected} for DPO (lota.training.dpo).

Offline, from a prepared task's training records (lota.prepare_data's train.jsonl): for a
seeded subset, chosen is the record's reference response and rejected the base model's own
greedy completion of the prompt (lota.evaluation.generation's transformers backend). The pairs then
teach the model to prefer the reference over what it already says, with no external data or
judge. Both sides end with the end-of-sequence token, as prepare_data's responses do, so that
they differ in content only (a completion cut at max_new_tokens is ended too: it is the
rejected side either way). A pair whose completion is empty or equals the reference (after
stripping whitespace) compares nothing and is dropped.

With --hub-dataset, the pairs come from a hub preference dataset instead (e.g.
HuggingFaceH4/ultrafeedback_binarized, split train_prefs), and only the model's tokenizer is
used: a row whose chosen and rejected are conversations (lists of {role, content}) gets as
prompt the chat template applied to the messages before the last assistant turn, with a
generation prompt, and as chosen and rejected the last assistant messages' contents; a row
whose chosen and rejected are plain strings keeps its string prompt, formatted as
prepare_data formats a question.

Output: JSONL {"prompt", "chosen", "rejected"}, written atomically.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import Any

from transformers import PreTrainedTokenizerBase

from lota.core.cli import arg, check_minimums, run_main, threads_arg, trust_remote_code_arg
from lota.core.errors import UserError
from lota.core.io import read_jsonl, write_jsonl
from lota.core.modeling import load_tokenizer, set_threads
from lota.evaluation.generation import GenerateArgs, generate_transformers
from lota.tasks.formats import format_prompt
from lota.tasks.records import seeded_subset

log = logging.getLogger("lota.preference_data")


@dataclass
class PreferenceDataArgs:
    model: Path = arg(help="base HF model directory: it generates the rejected responses; its tokenizer formats")
    out: Path = arg(help="output JSONL of preference pairs {prompt, chosen, rejected}")
    data: Path | None = arg(None, "prepared training records (prepare_data's train.jsonl); unused with --hub-dataset")
    size: int = arg(0, "records to pair, a seeded subset (0: all); dropped pairs make the output smaller")
    max_new_tokens: int = arg(256, "tokens generated at most per rejected response")
    batch_size: int = arg(16, "prompts per generation batch")
    seed: int = arg(0, "seed of the subset selection")
    hub_dataset: str | None = arg(
        None, "hub preference dataset instead of --data, e.g. HuggingFaceH4/ultrafeedback_binarized"
    )
    hub_config: str | None = arg(None, "the hub dataset's configuration, if it has several")
    hub_split: str = arg("train_prefs", "the hub dataset's split")
    threads: int = threads_arg()
    trust_remote_code: bool = trust_remote_code_arg()


def validate(args: PreferenceDataArgs) -> None:
    check_minimums(args, {"size": 0, "max_new_tokens": 1, "batch_size": 1})
    if args.hub_dataset is None and args.data is None:
        raise UserError("preference data needs --data (prepared training records) or --hub-dataset")
    if args.hub_dataset is not None and args.data is not None:
        log.warning("--data %s is not used: the pairs come from --hub-dataset %s", args.data, args.hub_dataset)


def strip_eos(text: str, eos_token: str) -> str:
    """The text without surrounding whitespace and trailing end-of-sequence tokens."""
    text = text.strip()
    while eos_token and text.endswith(eos_token):
        text = text.removesuffix(eos_token).rstrip()
    return text


def keep_pair(chosen: str, rejected: str, eos_token: str) -> bool:
    """Whether a pair compares anything: a non-empty rejected response other than the chosen one
    (whitespace and end-of-sequence tokens aside)."""
    rejected_text = strip_eos(rejected, eos_token)
    return rejected_text not in ("", strip_eos(chosen, eos_token))


# --- offline: the reference response against the model's own ----------------------------


def read_prepared(path: Path) -> list[dict[str, Any]]:
    records = read_jsonl(path, "training data")
    for number, record in enumerate(records, start=1):
        if not isinstance(record.get("prompt"), str) or not isinstance(record.get("response"), str):
            raise UserError(f"{path}: record {number} needs string fields 'prompt' and 'response'")
    return records


def offline_pairs(
    args: PreferenceDataArgs, records: list[dict[str, Any]], eos_token: str
) -> tuple[list[dict[str, str]], int]:
    """(pairs, records read): chosen the reference response, rejected the model's greedy
    completion, ended with `eos_token`."""
    chosen = seeded_subset(records, args.size, args.seed)
    generation = GenerateArgs(
        model=args.model,
        data=args.data,
        out=args.out,
        backend="transformers",
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        temperature=0.0,
        seed=args.seed,
        threads=args.threads,
        trust_remote_code=args.trust_remote_code,
    )
    completions = generate_transformers(generation, [record["prompt"] for record in chosen])
    pairs = [
        {
            "prompt": record["prompt"],
            "chosen": record["response"],
            "rejected": strip_eos(completion, eos_token) + eos_token,
        }
        for record, completion in zip(chosen, completions, strict=True)
    ]
    return pairs, len(chosen)


# --- hub: a published preference set ----------------------------------------------------


def load_hub_rows(dataset_id: str, config: str | None, split: str) -> Any:
    """The hub split as a datasets.Dataset (rows read on indexing); a UserError if it cannot be loaded."""
    import datasets

    try:
        return datasets.load_dataset(dataset_id, config, split=split)
    except Exception as error:  # noqa: BLE001 - offline, auth and missing-split errors all end here
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"hub dataset {dataset_id} (split {split}) could not be loaded: {first_line}") from None


def last_assistant_turn(messages: list[Any], side: str, where: str) -> tuple[list[dict[str, str]], str]:
    """(the messages before the last one, its content); the last one must be the assistant's."""
    well_formed = all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in messages
    )
    if not messages or not well_formed or messages[-1]["role"] != "assistant":
        raise UserError(f"{where}: '{side}' must be messages {{role, content}} ending with an assistant message")
    return [{"role": m["role"], "content": m["content"]} for m in messages[:-1]], messages[-1]["content"]


def hub_pair(row: dict[str, Any], tokenizer: PreTrainedTokenizerBase, where: str) -> dict[str, str]:
    """A hub row as {prompt, chosen, rejected}, both responses ended with the tokenizer's eos token."""
    chosen, rejected = row.get("chosen"), row.get("rejected")
    eos = tokenizer.eos_token
    if isinstance(chosen, str) and isinstance(rejected, str):
        if not isinstance(row.get("prompt"), str):
            raise UserError(f"{where}: a row with string 'chosen' and 'rejected' needs a string 'prompt'")
        return {
            "prompt": format_prompt(row["prompt"], tokenizer),
            "chosen": chosen + eos,
            "rejected": rejected + eos,
        }
    if not isinstance(chosen, list) or not isinstance(rejected, list):
        raise UserError(f"{where}: 'chosen' and 'rejected' must both be strings or both lists of messages")
    context, chosen_text = last_assistant_turn(chosen, "chosen", where)
    rejected_context, rejected_text = last_assistant_turn(rejected, "rejected", where)
    if rejected_context != context:
        raise UserError(f"{where}: 'chosen' and 'rejected' continue different conversations")
    if not context:
        raise UserError(f"{where}: no message before the assistant's answer to prompt with")
    if not tokenizer.chat_template:
        if len(context) != 1 or context[0]["role"] != "user":
            raise UserError(
                f"{where}: the tokenizer of {tokenizer.name_or_path} has no chat template for a conversation"
            )
        prompt = format_prompt(context[0]["content"], tokenizer)
    else:
        prompt = tokenizer.apply_chat_template(context, tokenize=False, add_generation_prompt=True)
    return {"prompt": prompt, "chosen": chosen_text + eos, "rejected": rejected_text + eos}


def hub_pairs(args: PreferenceDataArgs, tokenizer: PreTrainedTokenizerBase) -> tuple[list[dict[str, str]], int]:
    """(pairs, rows read) from a seeded subset of the hub split's rows."""
    rows = load_hub_rows(args.hub_dataset, args.hub_config, args.hub_split)
    indices = seeded_subset(list(range(len(rows))), args.size, args.seed)
    where = f"{args.hub_dataset} {args.hub_split}"
    return [hub_pair(dict(rows[i]), tokenizer, f"{where} row {i}") for i in indices], len(indices)


# --- the stage --------------------------------------------------------------------------


def build_pairs(args: PreferenceDataArgs) -> list[dict[str, str]]:
    """The preference pairs `args` ask for, the ones that compare nothing dropped."""
    validate(args)
    started = time.perf_counter()
    set_threads(args.threads)
    tokenizer = load_tokenizer(args.model, args.trust_remote_code)
    if tokenizer.eos_token is None:
        raise UserError(f"the tokenizer in {args.model} has no end-of-sequence token to end responses with")
    if args.hub_dataset is not None:
        pairs, read = hub_pairs(args, tokenizer)
    else:
        pairs, read = offline_pairs(args, read_prepared(args.data), tokenizer.eos_token)
    kept = [pair for pair in pairs if keep_pair(pair["chosen"], pair["rejected"], tokenizer.eos_token)]
    if len(kept) < len(pairs):
        log.info(
            "%d of %d pairs dropped: the rejected response is empty or equals the chosen one",
            len(pairs) - len(kept),
            len(pairs),
        )
    if not kept:
        raise UserError(f"no preference pair left of {read}: every rejected response is empty or equals the chosen one")

    def mean_tokens(key: str) -> float:
        return fmean(len(tokenizer(pair[key], add_special_tokens=False).input_ids) for pair in kept)

    log.info(
        "%d pairs of %d %s in %.1f s; mean tokens: prompt %.1f, chosen %.1f, rejected %.1f",
        len(kept),
        read,
        "hub rows" if args.hub_dataset else "records",
        time.perf_counter() - started,
        mean_tokens("prompt"),
        mean_tokens("chosen"),
        mean_tokens("rejected"),
    )
    return kept


def run(args: PreferenceDataArgs) -> None:
    """Build preference pairs {prompt, chosen, rejected} for DPO: the reference response against
    the base model's own, or from a hub preference dataset."""
    pairs = build_pairs(args)
    write_jsonl(args.out, pairs)
    log.info("wrote %d pairs -> %s", len(pairs), args.out)


if __name__ == "__main__":
    run_main(PreferenceDataArgs, run)
