"""Stage fisher: gradient scores of the base model over a few calibration batches, for masks.

RoSA (Nikdan et al. 2024) picks its sparse mask from gradients of the base model on the task:
`mean_squared` accumulates each entry's squared gradient over the batches (the diagonal of the
empirical Fisher), `mean` averages the gradients themselves (extract_mask ranks its magnitude).
The scores are lota.training.gradients', as for RoSA's mask built after a warm-up.

Output: a safetensors file of fp32 scores, one tensor per covered weight, with metadata format
`lota-fisher` and the settings; `python -m lota.extract_mask --strategy fisher --scores FILE`
turns it into a mask.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from lota.core.cli import arg, check_minimums, existing_file, run_main, threads_arg, trust_remote_code_arg
from lota.core.io import FISHER_FORMAT, read_jsonl, save_tensors
from lota.core.modeling import device, load_model, load_tokenizer, set_threads
from lota.core.scope import DEFAULT_SCOPE
from lota.pipeline.names import SCORE_KINDS
from lota.training.data import tokenize_records
from lota.training.gradients import calibration_batches, covered_weights, gradient_scores

log = logging.getLogger("lota.fisher")


@dataclass
class FisherArgs:
    model: Path = arg(help="base HF model directory, whose gradients are scored")
    data: Path = arg(help="calibration records (JSONL with prompt and response)")
    out: Path = arg(help="output scores safetensors")
    kind: Literal[SCORE_KINDS] = arg(
        "mean_squared", "mean of squared gradients (empirical Fisher, RoSA's default), or mean gradient"
    )
    batches: int = arg(8, "calibration batches")
    batch_size: int = arg(8, "sequences per batch")
    max_length: int = arg(512, "tokens per sequence; longer ones are truncated at the end")
    scope: list[str] = arg(DEFAULT_SCOPE, "module names whose .weight tensors are scored")
    seed: int = arg(0, "seed of the order the records are drawn in")
    threads: int = threads_arg()
    trust_remote_code: bool = trust_remote_code_arg()


def run(args: FisherArgs) -> None:
    """Score the base model's covered weights by their gradients on calibration batches."""
    check_minimums(args, {"batches": 1, "batch_size": 1, "max_length": 2})
    existing_file(args.data, "calibration data")
    set_threads(args.threads)
    tokenizer = load_tokenizer(args.model, args.trust_remote_code)
    examples = tokenize_records(read_jsonl(args.data, "calibration data"), tokenizer, args.max_length, args.data)
    batches = calibration_batches(examples, args.batches, args.batch_size, args.seed, tokenizer.pad_token_id)
    model = load_model(args.model, torch.float32, args.trust_remote_code, device())
    model.eval()  # no dropout: the scores are of the model as it is
    model.requires_grad_(False)  # gradients of the covered weights only
    covered = covered_weights(dict(model.named_parameters()), args.scope)
    started = time.perf_counter()
    scores = gradient_scores(model, batches, covered, args.kind)
    metadata = {
        "format": FISHER_FORMAT,
        "kind": args.kind,
        "batches": str(len(batches)),
        "sequences": str(sum(len(batch["input_ids"]) for batch in batches)),
        "data": str(args.data),
    }
    save_tensors(args.out, scores, metadata)
    seconds = time.perf_counter() - started
    log.info(
        "%s scores of %d tensors over %d batches in %.1f s -> %s",
        args.kind,
        len(scores),
        len(batches),
        seconds,
        args.out,
    )


if __name__ == "__main__":
    run_main(FisherArgs, run)
