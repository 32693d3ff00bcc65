"""The train stage's options, declared once: grouped dataclasses whose fields are the stage's CLI
flags (lota.core.cli), each with its help and its bounds.

validate() checks every declared bound generically (lota.core.cli.check_bounds) and adds only the
rules that tie options together. The workflow config's per-method training settings
(`$defs.train_settings` of workflow/schemas/config.schema.yaml) are the groups CONFIG_GROUPS,
rendered by config_train_settings(); tests/test_train_args.py keeps the schema equal to them.

TrainArgs is every group at once, flat (`TrainArgs(model=..., lr=1e-3)`, `args.lr`); its fields
come in the groups' order, which is the order of summary.json's "args".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lota.core import distributed
from lota.core.cli import arg, check_bounds, existing_file, schema_properties, threads_arg, trust_remote_code_arg
from lota.core.errors import UserError
from lota.core.scope import DEFAULT_SCOPE
from lota.core.tracking import TrackingArgs
from lota.deltas.lora import LoraSettings
from lota.pipeline.names import ADAPTER_METHODS, SCORE_KINDS, TRAINED_METHODS

LOSS_REDUCTIONS = ("token_mean", "sequence_sum")


@dataclass(kw_only=True)
class RunArgs:
    """What is trained, from which model, on which data, and where the run directory goes."""

    model: Path = arg(help="base HF model directory (training starts from these weights)")
    data: Path = arg(help="training records (JSONL with prompt and response)")
    out: Path = arg(help="output directory")
    method: Literal[TRAINED_METHODS] = arg(
        "fft",
        "fft trains every weight; lota only the mask's entries; lora low-rank adapters (PEFT); rosa adapters and "
        "the mask's entries together",
    )
    mask: Path | None = arg(None, "mask file (lota; rosa unless it builds its mask after a warm-up)")


@dataclass(kw_only=True)
class WarmupMaskArgs:
    """RoSA's mask built from gradients after the adapters' warm-up (method rosa without a mask)."""

    mask_warmup_steps: int = arg(
        0,
        "rosa without --mask: train the adapters alone for N steps, then build the mask from gradients, then both",
        minimum=0,
    )
    mask_sparsity: float | None = arg(
        None, "rosa's warm-up mask: fraction of covered entries kept frozen", minimum=0.0, exclusive_maximum=1.0
    )
    mask_kind: Literal[SCORE_KINDS] = arg(
        "mean_squared", "rosa's warm-up mask ranks the mean squared gradient (empirical Fisher) or the mean gradient"
    )
    mask_batches: int = arg(8, "rosa's warm-up mask: calibration batches of batch_size sequences", minimum=1)
    mask_granularity: Literal["global", "per_tensor"] = arg("global", "rosa's warm-up mask: global or per-tensor")
    mask_scope: list[str] = arg(DEFAULT_SCOPE, "rosa's warm-up mask: module names whose .weight tensors it covers")


@dataclass(kw_only=True)
class LoraArgs:
    """The LoRA adapters of methods lora and rosa (their bounds are LoraSettings' checks)."""

    lora_rank: int = arg(16, "LoRA rank r")
    lora_alpha: float = arg(32.0, "LoRA alpha; the update is scaled by alpha / r")
    lora_dropout: float = arg(0.0, "dropout on the LoRA input")
    lora_targets: list[str] = arg(DEFAULT_SCOPE, "module names that get LoRA adapters")

    def lora_settings(self) -> LoraSettings:
        return LoraSettings(self.lora_rank, self.lora_alpha, self.lora_dropout, tuple(self.lora_targets))


@dataclass(kw_only=True)
class RecipeArgs:
    """The optimization recipe: optimizer, learning rate and its warm-up, budget, batches, clipping."""

    optimizer: Literal["adamw", "rmsprop"] = arg(
        "adamw", "AdamW, or RMSprop as in the LoTA paper (alpha 0.99, no momentum)"
    )
    lr: float = arg(1e-5, "learning rate", exclusive_minimum=0.0, maximum=1.0)
    weight_decay: float = arg(0.0, "decoupled weight decay (AdamW) or L2 term (RMSprop)", minimum=0.0, maximum=1.0)
    epochs: float = arg(
        1.0, "passes over the data; a fraction stops part-way through the last one", exclusive_minimum=0
    )
    max_steps: int = arg(0, "stop after this many optimizer steps (0: no limit)", minimum=0)
    batch_size: int = arg(8, "sequences per micro-batch", minimum=1)
    grad_accum: int = arg(1, "micro-batches per optimizer step", minimum=1)
    max_length: int = arg(512, "tokens per sequence; longer ones are truncated at the end", minimum=2)
    max_prompt_length: int = arg(
        0,
        "a sequence over max_length keeps this many prompt tokens, then max_length minus this many response tokens "
        "(the official code's truncation); 0: the sequence's end is cut",
        minimum=0,
    )
    group_by_length: bool = arg(
        True, "draw each micro-batch from sequences of similar length (little padding); off: a plain shuffle"
    )
    clip: Literal["per_tensor", "global", "none"] = arg(
        "per_tensor", "gradient clipping: each tensor's norm (the paper's), the global norm, or none"
    )
    max_grad_norm: float = arg(1.0, "clipping threshold", minimum=1e-12)
    warmup_steps: int = arg(0, "linear warm-up steps, then a constant learning rate", minimum=0)
    loss_reduction: Literal[LOSS_REDUCTIONS] = arg(
        "token_mean",
        "sft: the mean over the step's response tokens, or each sequence's summed loss averaged over the step's "
        "sequences (the official code's)",
    )


@dataclass(kw_only=True)
class EngineArgs:
    """How the engine computes: dtypes, memory savers, kernels, when parameters are updated."""

    precision: Literal["bf16", "fp32"] = arg("bf16", "compute in bf16 (autocast over fp32 weights), or in fp32")
    weights: Literal["fp32", "bf16"] = arg(
        "fp32", "dtype of the model's weights; bf16 keeps an fp32 master copy of the trainable entries only"
    )
    activation_checkpointing: bool = arg(False, "recompute activations in the backward pass: less memory, more time")
    attention: Literal["sdpa", "eager"] = arg(
        "sdpa", "attention kernel: sdpa keeps memory linear in length; eager can be faster on CPU for short sequences"
    )
    compile: bool = arg(False, "torch.compile each decoder layer (compiling takes a minute or two per input shape)")
    optimizer_in_backward: bool = arg(
        True, "update each parameter as soon as its gradient is complete (not with grad_accum > 1 or clip global)"
    )


@dataclass(kw_only=True)
class LossArgs:
    """The loss: the responses' cross-entropy, or DPO's over preference pairs."""

    loss: Literal["sft", "dpo"] = arg(
        "sft", "sft: cross-entropy of the responses; dpo: DPO on preference records (prompt, chosen, rejected)"
    )
    beta: float = arg(
        0.1, "dpo: the strength of the KL penalty that keeps the policy near the reference", minimum=1e-12
    )
    reference_free: bool = arg(False, "dpo: no reference model (a uniform one: the policy's log-ratio alone)")


@dataclass(kw_only=True)
class ProcessArgs:
    """How the run goes: its seed, processes, checkpoints and threads (all but the seed change
    nothing in its outputs)."""

    seed: int = arg(0, "seed of the data order and of any randomness in the model")
    processes: int = arg(
        1, "processes sharing the model (FSDP2); above 1, the stage restarts itself under torchrun", minimum=1
    )
    checkpoint_every: int = arg(
        0, "save a checkpoint every N optimizer steps, which a rerun resumes from (0: none)", minimum=0
    )
    checkpoint_dir: Path | None = arg(None, "where the checkpoint goes (default: <out>.checkpoint beside the run)")
    threads: int = threads_arg()
    trust_remote_code: bool = trust_remote_code_arg()


@dataclass(kw_only=True)
class TrainArgs(TrackingArgs, ProcessArgs, LossArgs, EngineArgs, RecipeArgs, LoraArgs, WarmupMaskArgs, RunArgs):
    """Every option of the train stage (the groups' fields, RunArgs' first)."""


# The groups the workflow config sets per method (train.fft, train.lota, ...), but the lengths,
# which are the task's (tasks.<task>.max_length, tasks.<task>.max_prompt_length).
CONFIG_GROUPS = (RecipeArgs, EngineArgs)
TASK_SETTINGS = ("max_length", "max_prompt_length")


def config_train_settings() -> dict[str, dict[str, Any]]:
    """The JSON schema properties of the config's training settings ($defs.train_settings). The
    config's lr may also list rates, among which the workflow chooses on the validation split."""
    properties = schema_properties(*CONFIG_GROUPS, omit=TASK_SETTINGS)
    rate = properties["lr"]
    bounds = {key: rate[key] for key in ("type", "exclusiveMinimum", "maximum")}
    properties["lr"] = {
        "anyOf": [bounds, {"type": "array", "items": bounds, "minItems": 2, "uniqueItems": True}],
        "default": rate["default"],
        "description": f"{rate['description']}, or rates to choose among on the validation split",
    }
    return properties


def validate(args: TrainArgs) -> None:
    """UserError naming the first bad option: a value off its declared bounds, or options that do
    not go together."""
    check_bounds(args)
    if math.isinf(args.epochs):
        raise UserError(f"epochs must be a finite number, got {args.epochs}")
    if args.loss == "dpo":
        if args.processes > 1 or distributed.launched_processes() > 1:
            raise UserError("loss dpo runs in one process: use --processes 1")
        if args.mask_warmup_steps:
            raise UserError("rosa's warm-up mask ranks cross-entropy gradients: give loss dpo a --mask")
        if args.loss_reduction != "token_mean":
            raise UserError("loss dpo averages over its pairs: --loss-reduction is for loss sft")
    if args.max_prompt_length and args.max_prompt_length >= args.max_length:
        raise UserError(
            f"max_prompt_length {args.max_prompt_length} leaves no response token within max_length {args.max_length}"
        )
    if args.method == "lota" and args.mask is None:
        raise UserError("method lota needs --mask")
    if args.method == "rosa" and (args.mask is None) == (args.mask_warmup_steps == 0):
        raise UserError("method rosa needs either --mask or --mask-warmup-steps (the mask built after a warm-up)")
    if args.mask_warmup_steps and args.method != "rosa":
        raise UserError("--mask-warmup-steps is for method rosa")
    if args.mask_warmup_steps:
        if args.mask_sparsity is None:
            raise UserError("--mask-warmup-steps needs --mask-sparsity")
        if args.processes > 1 or distributed.launched_processes() > 1:
            raise UserError("rosa's warm-up mask is built in one process: use --mask, or --processes 1")
    if args.weights == "bf16" and args.precision == "fp32":
        raise UserError("weights bf16 computes in bf16: use precision bf16 with it")
    if args.method in ADAPTER_METHODS:
        args.lora_settings()
    existing_file(args.data, "training data")
    if args.mask is not None:
        existing_file(args.mask, "mask file")
