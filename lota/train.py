"""Stage train: dense fine-tuning (fft), sparse adaptation through a mask (lota), LoRA (lora), or
RoSA (rosa: LoRA adapters and the sparse update through a mask, trained together), all on one
engine (lota.optim), so the methods are compared on one code path.

The loss is the mean cross-entropy over response tokens only (--loss sft), or DPO's over
preference pairs (--loss dpo, lota.dpo) against the model training starts from, for any method.
For lota the model restarts from the base weights and only the mask's entries are trained, with
optimizer state for those entries alone; frozen entries are never written and stay
bit-identical to the base. Parameters no method trains get no gradient at all. By default each
parameter is updated inside the backward pass as soon as its gradient is complete, so no full
gradient buffer exists.

Launched by `torchrun --nproc-per-node N`, the model is sharded over N processes with FSDP2
(lota.distributed): each optimizer step's micro-batches are split among the processes, and
masks, master entries and optimizer state are sharded as the parameters are. The run directory
is the same as from one process, written by the first.

Outputs, in one directory written atomically:
  weights.safetensors  fft: every parameter; lota, rosa: the sparse delta (lota.sparse_delta);
                       lora: the adapter (lota.lora)
  adapter.safetensors  rosa: the adapter
  mask.safetensors     rosa with --mask-warmup-steps: the mask built after the warm-up
  log.jsonl            one line per optimizer step: loss, lr, grad norm, tokens/s, peak memory
  summary.json         arguments, trainable parameter count, steps, tokens, wall time, memory

With --checkpoint-every N, a checkpoint is saved every N steps beside the run directory
(<out>.checkpoint, lota.checkpoint); a rerun of a killed run resumes from it and ends
bit-identical to an uninterrupted run. It is deleted when the run completes.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import math
import random
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from peft import PeftModel
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase

from lota import checkpoint, distributed, dpo
from lota.cli import arg, check_minimums, check_range, existing_file, run_main, threads_arg, trust_remote_code_arg
from lota.errors import UserError
from lota.extract_mask import DEFAULT_SCOPE, load_mask, save_mask, select_mask
from lota.io import WEIGHTS_FORMAT, TensorReader, atomic_path, checkpoint_files, read_jsonl, save_tensors, write_json
from lota.lora import LoraSettings, add_lora, lora_adapter_tensors, save_lora_adapter
from lota.modeling import device, load_model, load_tokenizer, peak_memory_mb, reset_peak_memory, set_threads
from lota.optim import ParameterUpdater, Slot, make_slots
from lota.sparse_delta import save_sparse_delta

log = logging.getLogger("lota.train")
IGNORE_INDEX = -100


@dataclass
class TrainArgs:
    model: Path = arg(help="base HF model directory (training starts from these weights)")
    data: Path = arg(help="training records (JSONL with prompt and response)")
    out: Path = arg(help="output directory")
    method: Literal["fft", "lota", "lora", "rosa"] = arg(
        "fft",
        "fft trains every weight; lota only the mask's entries; lora low-rank adapters (PEFT); rosa adapters and "
        "the mask's entries together",
    )
    mask: Path | None = arg(None, "mask file (lota; rosa unless it builds its mask after a warm-up)")
    mask_warmup_steps: int = arg(
        0, "rosa without --mask: train the adapters alone for N steps, then build the mask from gradients, then both"
    )
    mask_sparsity: float | None = arg(None, "rosa's warm-up mask: fraction of covered entries kept frozen")
    mask_kind: Literal["mean_squared", "mean"] = arg(
        "mean_squared", "rosa's warm-up mask ranks the mean squared gradient (empirical Fisher) or the mean gradient"
    )
    mask_batches: int = arg(8, "rosa's warm-up mask: calibration batches of batch_size sequences")
    mask_granularity: Literal["global", "per_tensor"] = arg("global", "rosa's warm-up mask: global or per-tensor")
    mask_scope: list[str] = arg(DEFAULT_SCOPE, "rosa's warm-up mask: module names whose .weight tensors it covers")
    lora_rank: int = arg(16, "LoRA rank r")
    lora_alpha: float = arg(32.0, "LoRA alpha; the update is scaled by alpha / r")
    lora_dropout: float = arg(0.0, "dropout on the LoRA input")
    lora_targets: list[str] = arg(DEFAULT_SCOPE, "module names that get LoRA adapters")
    optimizer: Literal["adamw", "rmsprop"] = arg(
        "adamw", "AdamW, or RMSprop as in the LoTA paper (alpha 0.99, no momentum)"
    )
    lr: float = arg(1e-5, "learning rate")
    weight_decay: float = arg(0.0, "decoupled weight decay (AdamW) or L2 term (RMSprop)")
    epochs: float = arg(1.0, "passes over the data; a fraction stops part-way through the last one")
    max_steps: int = arg(0, "stop after this many optimizer steps (0: no limit)")
    batch_size: int = arg(8, "sequences per micro-batch")
    grad_accum: int = arg(1, "micro-batches per optimizer step")
    max_length: int = arg(512, "tokens per sequence; longer ones are truncated at the end")
    clip: Literal["per_tensor", "global", "none"] = arg(
        "per_tensor", "gradient clipping: each tensor's norm (the paper's), the global norm, or none"
    )
    max_grad_norm: float = arg(1.0, "clipping threshold")
    warmup_steps: int = arg(0, "linear warm-up steps, then a constant learning rate")
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
    loss: Literal["sft", "dpo"] = arg(
        "sft", "sft: cross-entropy of the responses; dpo: DPO on preference records (prompt, chosen, rejected)"
    )
    beta: float = arg(0.1, "dpo: the strength of the KL penalty that keeps the policy near the reference")
    reference_free: bool = arg(False, "dpo: no reference model (a uniform one: the policy's log-ratio alone)")
    seed: int = arg(0, "seed of the data order and of any randomness in the model")
    processes: int = arg(1, "processes sharing the model (FSDP2); above 1, the stage restarts itself under torchrun")
    checkpoint_every: int = arg(0, "save a checkpoint every N optimizer steps, which a rerun resumes from (0: none)")
    checkpoint_dir: Path | None = arg(None, "where the checkpoint goes (default: <out>.checkpoint beside the run)")
    threads: int = threads_arg()
    trust_remote_code: bool = trust_remote_code_arg()


def validate(args: TrainArgs) -> None:
    check_range("lr", args.lr, 0.0, 1.0)
    if args.lr == 0:
        raise UserError("lr must be > 0")
    check_range("weight_decay", args.weight_decay, 0.0, 1.0)
    check_range("max_grad_norm", args.max_grad_norm, 1e-12, math.inf)
    check_minimums(
        args,
        {
            "batch_size": 1,
            "grad_accum": 1,
            "max_length": 2,
            "max_steps": 0,
            "warmup_steps": 0,
            "processes": 1,
            "checkpoint_every": 0,
        },
    )
    if not args.epochs > 0 or math.isinf(args.epochs):
        raise UserError(f"epochs must be a positive number, got {args.epochs}")
    check_minimums(args, {"mask_warmup_steps": 0, "mask_batches": 1})
    if args.loss == "dpo":
        check_range("beta", args.beta, 1e-12, math.inf)
        if args.processes > 1 or distributed.launched_processes() > 1:
            raise UserError("loss dpo runs in one process: use --processes 1")
        if args.mask_warmup_steps:
            raise UserError("rosa's warm-up mask ranks cross-entropy gradients: give loss dpo a --mask")
    if args.method == "lota" and args.mask is None:
        raise UserError("method lota needs --mask")
    if args.method == "rosa" and (args.mask is None) == (args.mask_warmup_steps == 0):
        raise UserError("method rosa needs either --mask or --mask-warmup-steps (the mask built after a warm-up)")
    if args.mask_warmup_steps and args.method != "rosa":
        raise UserError("--mask-warmup-steps is for method rosa")
    if args.mask_warmup_steps:
        if args.mask_sparsity is None:
            raise UserError("--mask-warmup-steps needs --mask-sparsity")
        check_range("mask_sparsity", args.mask_sparsity, 0.0, 1.0, high_open=True)
        if args.processes > 1 or distributed.launched_processes() > 1:
            raise UserError("rosa's warm-up mask is built in one process: use --mask, or --processes 1")
    if args.weights == "bf16" and args.precision == "fp32":
        raise UserError("weights bf16 computes in bf16: use precision bf16 with it")
    if args.method in ("lora", "rosa"):
        lora_settings(args)
    existing_file(args.data, "training data")
    if args.mask is not None:
        existing_file(args.mask, "mask file")


# --- data -------------------------------------------------------------------------------


def tokenize_example(
    prompt: str, response: str, tokenizer: PreTrainedTokenizerBase, max_length: int
) -> tuple[list[int], list[int]]:
    """(input ids, labels) with the prompt's labels ignored, truncated to max_length."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    response_ids = tokenizer(response, add_special_tokens=False).input_ids
    input_ids = (prompt_ids + response_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + response_ids)[:max_length]
    return input_ids, labels


def has_target(labels: Sequence[int]) -> bool:
    """Whether a sequence has a response token to learn (its first token is predicted by nothing)."""
    return any(label != IGNORE_INDEX for label in labels[1:])


def tokenize_records(
    records: Sequence[dict[str, Any]], tokenizer: PreTrainedTokenizerBase, max_length: int, source: Path
) -> list[tuple[list[int], list[int]]]:
    examples = []
    for number, record in enumerate(records, start=1):
        if not isinstance(record.get("prompt"), str) or not isinstance(record.get("response"), str):
            raise UserError(f"{source}: record {number} needs string fields 'prompt' and 'response'")
        input_ids, labels = tokenize_example(record["prompt"], record["response"], tokenizer, max_length)
        if has_target(labels):
            examples.append((input_ids, labels))
    if not examples:
        raise UserError(f"{source}: no record keeps a response token within max_length={max_length}")
    if len(examples) < len(records):
        log.warning(
            "%d of %d records dropped: prompt fills max_length=%d",
            len(records) - len(examples),
            len(records),
            max_length,
        )
    return examples


def collate(examples: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a micro-batch to its longest sequence."""
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (ids, target) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(target)] = torch.tensor(target)
        attention_mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def micro_batches(n_examples: int, batch_size: int, epochs: float, seed: int) -> Iterator[tuple[float, list[int]]]:
    """(fractional epoch, example indices) per micro-batch; each epoch is a fresh seeded shuffle."""
    total = math.ceil(epochs * n_examples)
    served, epoch = 0, 0
    while served < total:
        order = list(range(n_examples))
        random.Random(seed * 100_003 + epoch).shuffle(order)
        order = order[: total - served]
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            served += len(chunk)
            yield served / n_examples, chunk
        epoch += 1


# --- the model and its trainable entries -------------------------------------------------

Example = tuple[list[int], list[int]]  # input ids, labels
Chosen = list[tuple[str, torch.nn.Parameter, torch.Tensor | None]]


def lora_settings(args: TrainArgs) -> LoraSettings:
    return LoraSettings(args.lora_rank, args.lora_alpha, args.lora_dropout, tuple(args.lora_targets))


def load_for_training(args: TrainArgs, on: torch.device) -> torch.nn.Module:
    """The base model in the weight dtype, with activation checkpointing and LoRA adapters if asked."""
    dtype = torch.bfloat16 if args.weights == "bf16" else torch.float32
    model = load_model(args.model, dtype, args.trust_remote_code, on, args.attention)
    model.config.use_cache = False
    if args.activation_checkpointing:
        # Non-reentrant: works with frozen inputs (LoRA, LoTA) and with the in-backward updates.
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if args.method in ("lora", "rosa"):
        model = add_lora(model, lora_settings(args))
    if args.compile:
        for layer in decoder_layers(model, "to compile"):
            layer.compile()  # one compiled graph serves all layers of a model
    if distributed.is_sharded():
        distributed.shard_model(model, decoder_layers(model, "to shard"), on)
    model.train()
    return model


def decoder_layers(model: torch.nn.Module, purpose: str) -> list[torch.nn.Module]:
    layer_classes = set(getattr(model, "_no_split_modules", None) or [])
    layers = [module for module in model.modules() if type(module).__name__ in layer_classes]
    if not layers:
        raise UserError(f"{type(model).__name__} names no decoder layer class (_no_split_modules) {purpose}")
    return layers


def trainable_parameters(model: torch.nn.Module, method: str, mask_path: Path | None) -> Chosen:
    """(name, parameter, trainable flat indices of its local part, or None for all); others get
    requires_grad False. A masked parameter goes by its base model's name (as in the mask)."""
    named = dict(model.named_parameters())
    if method == "fft":
        return [(name, p, None) for name, p in named.items()]
    # PEFT has frozen everything but the adapters.
    adapters = [(name, p, None) for name, p in named.items() if p.requires_grad] if method in ("lora", "rosa") else []
    if method == "lora":
        return adapters
    shapes = {name: p.shape for name, p in base_parameters(model).items()}
    masks = {} if mask_path is None else load_mask(mask_path, shapes)
    return adapters + masked_entries(model, masks)


def base_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The base model's weights by their names in its checkpoint; under PEFT, without the wrapper's
    prefix and `base_layer`, and without the adapters."""
    if not isinstance(model, PeftModel):
        return dict(model.named_parameters())
    return {
        name.replace(".base_layer.", "."): parameter
        for name, parameter in model.get_base_model().named_parameters()
        if ".lora_" not in name
    }


def masked_entries(model: torch.nn.Module, masks: dict[str, torch.Tensor]) -> Chosen:
    """A slot choice for each base weight with a trainable entry in `masks`; those weights get
    requires_grad, the other base weights none."""
    chosen = []
    for name, parameter in base_parameters(model).items():
        trained = name in masks and bool(masks[name].any())
        parameter.requires_grad_(trained)
        if trained:
            # A process's shard of a parameter may hold no trainable entry; it still takes part.
            local_mask = distributed.shard_like(masks[name], parameter)
            chosen.append((name, parameter, local_mask.flatten().nonzero().squeeze(1)))
    return chosen


class CheckpointValues:
    """fp32 values of the base model's tensors, read from its checkpoint one tensor at a time."""

    def __init__(self, model_dir: Path):
        self.model_dir = model_dir

    def __call__(self, name: str) -> torch.Tensor:
        with TensorReader(checkpoint_files(self.model_dir)) as reader:
            if name not in reader:
                raise UserError(f"{name} is not in the checkpoint of {self.model_dir}; train with --weights fp32")
            return reader.get(name).float()


def make_updater(model: torch.nn.Module, args: TrainArgs) -> ParameterUpdater:
    chosen = trainable_parameters(model, args.method, args.mask)
    in_backward = updates_in_backward(args)
    return ParameterUpdater(slots_of(chosen, args), args.clip, args.max_grad_norm, in_backward=in_backward)


def slots_of(chosen: Chosen, args: TrainArgs) -> list[Slot]:
    return make_slots(chosen, args.optimizer, args.lr, args.weight_decay, CheckpointValues(args.model))


def warmup_mask(
    model: torch.nn.Module, args: TrainArgs, examples: Sequence[Example], pad_id: int, on: torch.device
) -> dict[str, torch.Tensor]:
    """RoSA's schedule: after the adapters' warm-up, the mask ranks the gradients of the model as it
    now is (base weights plus adapters) over calibration batches in the seeded training order."""
    from lota.fisher import calibration_batches, covered_weights, gradient_scores  # lota.fisher imports this module

    batches = calibration_batches(list(examples), args.mask_batches, args.batch_size, args.seed, pad_id)
    covered = covered_weights(base_parameters(model), args.mask_scope)
    with torch.autocast(on.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
        scores = gradient_scores(model, batches, covered, args.mask_kind)
    return select_mask(scores, args.mask_sparsity, args.mask_granularity)


def warmup_mask_info(args: TrainArgs) -> dict[str, Any]:
    strategy = "fisher" if args.mask_kind == "mean_squared" else "gradient_mean"
    return {
        "strategy": strategy,
        "after_step": args.mask_warmup_steps,
        "sparsity": args.mask_sparsity,
        "granularity": args.mask_granularity,
        "scope": sorted(args.mask_scope),
        "excluded": [],
    }


def updates_in_backward(args: TrainArgs) -> bool:
    """In-backward updates need each gradient final on arrival and clipped on its own, and an
    unsharded model (FSDP2 sets sharded gradients after the backward pass)."""
    return (
        args.optimizer_in_backward and args.grad_accum == 1 and args.clip != "global" and not distributed.is_sharded()
    )


def save_weights(path: Path, args: TrainArgs, model: torch.nn.Module, updater: ParameterUpdater) -> None:
    """fft: every parameter; lota: the sparse delta of the trained entries; lora: the adapter;
    rosa: the sparse delta, and the adapter beside it (adapter.safetensors).

    Every process takes part (sharded tensors are gathered one at a time); the main one writes.
    """
    main = distributed.is_main()
    if args.method in ("lora", "rosa"):
        tensors = lora_adapter_tensors(model)
        if main:
            adapter_path = path.with_name("adapter.safetensors") if args.method == "rosa" else path
            save_lora_adapter(adapter_path, tensors, lora_settings(args))
    if args.method == "fft":
        tensors = {}
        for slot in updater.slots:
            full = distributed.gather_full(slot.master.detach(), slot.parameter)
            if main:
                tensors[slot.name] = full.contiguous().cpu()
        if main:
            save_tensors(path, tensors, {"format": WEIGHTS_FORMAT})
    if args.method in ("lota", "rosa"):
        delta = {}
        with TensorReader(checkpoint_files(args.model)) as base:
            for slot in (slot for slot in updater.slots if slot.indices is not None):
                indices, values = gather_trained_entries(slot)
                if main:
                    delta[slot.name] = (indices, values - base.get(slot.name).view(-1)[indices])
        if main:
            shapes = {slot.name: slot.parameter.shape for slot in updater.slots if slot.indices is not None}
            save_sparse_delta(path, delta, shapes)


def gather_trained_entries(slot: Slot) -> tuple[torch.Tensor, torch.Tensor]:
    """(flat indices in the whole parameter, fp32 values) of a masked slot's trained entries."""
    if not distributed.is_sharded():
        return slot.indices.cpu(), slot.master.detach().cpu()
    trained = torch.zeros(slot.values.numel(), dtype=torch.uint8, device=slot.master.device)
    trained[slot.indices] = 1
    values = torch.zeros(slot.values.numel(), dtype=torch.float32, device=slot.master.device)
    values[slot.indices] = slot.master.detach()
    trained = distributed.gather_full(trained.view(slot.values.shape), slot.parameter).view(-1).cpu()
    values = distributed.gather_full(values.view(slot.values.shape), slot.parameter).view(-1).cpu()
    indices = trained.nonzero().squeeze(1)
    return indices, values[indices]


# --- the loop ---------------------------------------------------------------------------


def response_token_count(labels: torch.Tensor) -> int:
    """The response tokens a batch's loss is over (a sequence's first token is predicted by nothing)."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def first_target_column(labels: torch.Tensor) -> int:
    """The first column holding a response token of any row (never 0: nothing predicts it)."""
    columns = (labels[:, 1:] != IGNORE_INDEX).any(0).nonzero()
    return int(columns[0]) + 1 if columns.numel() else labels.shape[1]


def response_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], trim_logits: bool) -> torch.Tensor:
    """Summed next-token cross-entropy over the response tokens (labels not IGNORE_INDEX).

    With `trim_logits`, logits are computed only from the first position that predicts a
    response token on: the prompt costs no output-layer work or logit memory.
    """
    labels = batch["labels"]
    first = first_target_column(labels) if trim_logits else 1
    # Positions as an index tensor, not a count: indexing copies the kept hidden states into a
    # contiguous tensor, where a slice would leave them strided, and a strided input to a frozen
    # output layer makes matmul expand the weight over the batch (a copy of it per sequence).
    positions = torch.arange(first - 1, labels.shape[1], device=labels.device)
    extra = {"logits_to_keep": positions} if trim_logits else {}
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **extra).logits
    predictions = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    return F.cross_entropy(predictions, labels[:, first:].reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")


def accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    inner = model.get_base_model() if isinstance(model, PeftModel) else model
    return "logits_to_keep" in inspect.signature(inner.forward).parameters


@dataclass
class StepResult:
    loss: float  # mean over the step's response tokens (sft) or pairs (dpo)
    target_tokens: int
    tokens: int
    grad_norm: float
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)  # dpo: reward accuracy and margin


def train_step(
    model: torch.nn.Module,
    updater: ParameterUpdater,
    batches: Sequence[dict[str, torch.Tensor]],
    precision: str,
    on: torch.device,
    trim_logits: bool,
) -> StepResult:
    """One optimizer step over the micro-batches `batches`."""
    # Every micro-batch's loss is divided by the step's response tokens (on every process), so
    # that accumulation and sharding give the same mean as one large batch.
    target_tokens = int(distributed.total(sum(response_token_count(batch["labels"]) for batch in batches)))
    loss_sum, tokens = 0.0, 0
    for batch in batches:
        batch = {key: value.to(on) for key, value in batch.items()}
        with torch.autocast(on.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = response_loss(model, batch, trim_logits)
        (loss / target_tokens).backward()
        loss_sum += loss.item()
        # A process's stand-in example (no targets, see process_share) is not counted.
        tokens += int(batch["attention_mask"][(batch["labels"] != IGNORE_INDEX).any(1)].sum())
    grad_norm = updater.step()
    loss_sum, tokens = distributed.total(loss_sum), int(distributed.total(tokens))
    return StepResult(loss_sum / target_tokens, target_tokens, tokens, grad_norm)


def dpo_step(
    model: torch.nn.Module,
    updater: ParameterUpdater,
    batches: Sequence[dict[str, torch.Tensor]],
    references: Sequence[tuple[torch.Tensor, torch.Tensor]],
    args: TrainArgs,
    on: torch.device,
    trim_logits: bool,
) -> StepResult:
    """One optimizer step of DPO over micro-batches of pairs (lota.dpo.pair_batch: chosen rows, then
    rejected), each with its pairs' reference log-probabilities."""
    pairs = sum(len(batch["input_ids"]) // 2 for batch in batches)
    loss_sum, target_tokens, tokens, wins, margins = 0.0, 0, 0, 0, 0.0
    for batch, (reference_chosen, reference_rejected) in zip(batches, references, strict=True):
        batch = {key: value.to(on) for key, value in batch.items()}
        with torch.autocast(on.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            chosen, rejected = dpo.sequence_logprobs(model, batch, trim_logits).chunk(2)
        losses, chosen_rewards, rejected_rewards = dpo.dpo_loss(
            chosen, rejected, reference_chosen.to(on), reference_rejected.to(on), args.beta, args.reference_free
        )
        (losses.sum() / pairs).backward()
        loss_sum += float(losses.detach().sum())
        wins += int((chosen_rewards > rejected_rewards).sum())
        margins += float((chosen_rewards - rejected_rewards).sum())
        target_tokens += response_token_count(batch["labels"])
        tokens += int(batch["attention_mask"].sum())
    grad_norm = updater.step()
    metrics = {"reward_accuracy": wins / pairs, "reward_margin": margins / pairs}
    return StepResult(loss_sum / pairs, target_tokens, tokens, grad_norm, metrics)


def micro_batch_pairs(pairs: Sequence[dpo.Pair], micro: list[tuple[float, list[int]]]) -> list[list[dpo.Pair]]:
    """The preference pairs of each micro-batch of an optimizer step."""
    return [[pairs[i] for i in chunk] for _, chunk in micro]


def dpo_references(
    model: torch.nn.Module,
    pairs: Sequence[dpo.Pair],
    steps: Sequence[list[tuple[float, list[int]]]],
    args: TrainArgs,
    pad_id: int,
    on: torch.device,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The (chosen, rejected) reference log-probs of every micro-batch of `steps`, in order: the
    model's as it is now, or zeros when reference-free (an implicit uniform reference)."""
    groups = [group for micro in steps for group in micro_batch_pairs(pairs, micro)]
    if args.reference_free:
        return iter([(torch.zeros(len(group)), torch.zeros(len(group))) for group in groups])
    return iter(dpo.reference_logprobs(model, groups, pad_id, on, args.precision))


def optimizer_steps(n_examples: int, args: TrainArgs) -> list[list[tuple[float, list[int]]]]:
    """The micro-batches of each optimizer step, at most max_steps of them."""
    batches = list(micro_batches(n_examples, args.batch_size, args.epochs, args.seed))
    steps = [batches[start : start + args.grad_accum] for start in range(0, len(batches), args.grad_accum)]
    return steps[: args.max_steps] if args.max_steps else steps


def process_share(examples: Sequence[Example], chunk: list[int]) -> list[Example]:
    """This process's examples of a micro-batch: every world_size-th one from its rank on.

    A process left without any (a micro-batch smaller than the process count) still runs one
    example with no target tokens, since every process takes part in each forward and backward.
    """
    share = [examples[i] for i in chunk[distributed.rank() :: distributed.world_size()]]
    if share:
        return share
    ids, _ = examples[chunk[0]]
    return [(ids, [IGNORE_INDEX] * len(ids))]


@contextmanager
def run_directory(out: Path) -> Iterator[Path]:
    """The run directory, written atomically by the main process; the others write to scratch."""
    if distributed.is_main():
        with atomic_path(out) as tmp:
            tmp.mkdir()
            yield tmp
    else:
        with tempfile.TemporaryDirectory(prefix="lota-train-") as scratch:
            yield Path(scratch)


def resume_settings(args: TrainArgs) -> dict[str, Any]:
    """The arguments a checkpoint must have been saved under to be resumed: all but those that
    change only how the run goes (threads, process count, checkpointing), as JSON values."""
    ignored = {"threads", "processes", "checkpoint_every", "checkpoint_dir"}
    return {key: value for key, value in json_arguments(args).items() if key not in ignored}


def json_arguments(args: TrainArgs) -> dict[str, Any]:
    return {key: str(value) if isinstance(value, Path) else value for key, value in dataclasses.asdict(args).items()}


def run_inputs(args: TrainArgs) -> list[Path]:
    """Every file the run reads: the base model directory's files, the data, the mask."""
    model_files = sorted(path for path in Path(args.model).iterdir() if path.is_file())
    return [*model_files, args.data, *([args.mask] if args.mask else [])]


def learning_rate(step: int, args: TrainArgs) -> float:
    """Linear warm-up over `warmup_steps` (step counts from 1), then constant."""
    return args.lr * min(1.0, step / args.warmup_steps) if args.warmup_steps else args.lr


def train(args: TrainArgs) -> tuple[dict[str, Any], torch.nn.Module]:
    """Train as `args` say and write the run directory; return its summary and the trained model."""
    validate(args)
    if args.processes not in (1, distributed.launched_processes()):
        raise UserError(f"--processes {args.processes}, but torchrun started {distributed.launched_processes()}")
    on = distributed.start(device().type)
    if not distributed.is_main():
        logging.getLogger("lota").setLevel(logging.WARNING)  # one process reports
    torch.manual_seed(args.seed)
    threads = set_threads(args.threads)
    tokenizer = load_tokenizer(args.model, args.trust_remote_code)
    records = read_jsonl(args.data, "training data")
    if args.loss == "dpo":
        examples = dpo.tokenize_preferences(records, tokenizer, args.max_length, args.data)
    else:
        examples = tokenize_records(records, tokenizer, args.max_length, args.data)
    model = load_for_training(args, on)
    updater = make_updater(model, args)
    trim_logits = accepts_logits_to_keep(model)
    steps = optimizer_steps(len(examples), args)
    trainable_count = int(distributed.total(updater.trainable_count))
    log.info(
        "%s: %d examples, %d steps, %d trainable parameters, %s weights, updates %s, on %d x %s (%d CPU threads each)",
        args.method,
        len(examples),
        len(steps),
        trainable_count,
        args.weights,
        "in the backward pass" if updater.in_backward else "after the backward pass",
        distributed.world_size(),
        on,
        threads,
    )

    if args.mask_warmup_steps >= len(steps):
        raise UserError(f"mask_warmup_steps {args.mask_warmup_steps} leaves no step of the {len(steps)} to the mask")

    checkpoint_dir = args.checkpoint_dir or args.out.with_name(f"{args.out.name}.checkpoint")
    run_fingerprint = checkpoint.fingerprint(resume_settings(args), run_inputs(args))
    # A warm-up mask is kept beside the checkpoints that train through it.
    saved_mask = checkpoint_dir / "warmup-mask.safetensors"
    resumable_step = checkpoint.resumable_step(checkpoint_dir, run_fingerprint)
    references = None  # dpo: the reference log-probs of each micro-batch still to run, in order
    if args.loss == "dpo":  # from the starting model, so before a checkpoint's weights are loaded
        references = dpo_references(model, examples, steps[resumable_step:], args, tokenizer.pad_token_id, on)
    masks = None
    if args.mask_warmup_steps and resumable_step >= args.mask_warmup_steps:
        masks = load_mask(saved_mask, {name: p.shape for name, p in base_parameters(model).items()})
        updater.add(slots_of(masked_entries(model, masks), args))
    progress = checkpoint.resume(checkpoint_dir, updater.slots, run_fingerprint, on) or checkpoint.Progress()
    resumed_from = progress.step
    checkpoints, checkpoint_s = 0, 0.0

    reset_peak_memory(on)
    with run_directory(args.out) as tmp:
        bar = tqdm(
            steps[resumed_from:],
            desc=f"train {args.method}",
            unit="step",
            initial=resumed_from,
            total=len(steps),
            disable=not distributed.is_main(),
        )
        with open(tmp / "log.jsonl", "w") as log_file:
            log_file.writelines(progress.log_lines)
            for step, micro in enumerate(bar, start=resumed_from + 1):
                step_started = time.perf_counter()
                lr = learning_rate(step, args)
                updater.set_lr(lr)
                if references is None:
                    batches = [collate(process_share(examples, chunk), tokenizer.pad_token_id) for _, chunk in micro]
                    result = train_step(model, updater, batches, args.precision, on, trim_logits)
                else:
                    groups = micro_batch_pairs(examples, micro)
                    batches = [dpo.pair_batch(group, tokenizer.pad_token_id) for group in groups]
                    step_references = [next(references) for _ in groups]
                    result = dpo_step(model, updater, batches, step_references, args, on, trim_logits)
                elapsed = time.perf_counter() - step_started
                progress.step, progress.tokens, progress.last_loss = step, progress.tokens + result.tokens, result.loss
                progress.wall_s += elapsed
                record = {
                    "step": step,
                    "epoch": round(micro[-1][0], 4),
                    "loss": result.loss,
                    "lr": lr,
                    "grad_norm": result.grad_norm,
                    "tokens": result.tokens,
                    "tokens_per_s": result.tokens / elapsed,
                    "step_s": elapsed,
                    "peak_memory_mb": peak_memory_mb(on),
                    **result.metrics,
                }
                progress.log_lines.append(json.dumps(record) + "\n")
                log_file.write(progress.log_lines[-1])
                log_file.flush()
                log.info(
                    "step %d/%d loss %.4f lr %.2e tokens/s %.0f peak %.0f MB",
                    step,
                    len(steps),
                    result.loss,
                    lr,
                    record["tokens_per_s"],
                    record["peak_memory_mb"],
                )
                if step == args.mask_warmup_steps:
                    masks = warmup_mask(model, args, examples, tokenizer.pad_token_id, on)
                    if args.checkpoint_every:
                        save_mask(saved_mask, masks, warmup_mask_info(args))
                    updater.add(slots_of(masked_entries(model, masks), args))
                    log.info("rosa: mask built after step %d, %d trainable parameters", step, updater.trainable_count)
                if args.checkpoint_every and step % args.checkpoint_every == 0 and step < len(steps):
                    saving_started = time.perf_counter()
                    checkpoint.save(checkpoint_dir, updater.slots, progress, run_fingerprint, on)
                    saving_s = time.perf_counter() - saving_started
                    checkpoints, checkpoint_s = checkpoints + 1, checkpoint_s + saving_s
                    log.info("checkpoint after step %d in %.1f s: %s", step, saving_s, checkpoint_dir)
        wall = progress.wall_s
        updater.remove_hooks()
        save_weights(tmp / "weights.safetensors", args, model, updater)
        if masks is not None:
            save_mask(tmp / "mask.safetensors", masks, warmup_mask_info(args))
        summary = {
            "method": args.method,
            "trainable_params": int(distributed.total(updater.trainable_count)),
            "total_params": sum(p.numel() for p in base_parameters(model).values()),
            "examples": len(examples),
            "steps": len(steps),
            "tokens": progress.tokens,
            "final_loss": progress.last_loss,
            "train_wall_s": wall,
            "tokens_per_s": progress.tokens / wall if wall else 0.0,
            "peak_memory_mb": peak_memory_mb(on),
            "optimizer_state_bytes": int(distributed.total(updater.state_bytes())),
            "updates_in_backward": updater.in_backward,
            "processes": distributed.world_size(),
            "resumed_from_step": resumed_from,
            "checkpoints": checkpoints,
            "checkpoint_s": checkpoint_s,
            "device": str(on),
            "cpu_threads": threads,
            "args": json_arguments(args),
        }
        write_json(tmp / "summary.json", summary)
    checkpoint.discard(checkpoint_dir)  # the run is complete: nothing to resume
    log.info("done in %.1f s: %s", wall, args.out)
    return summary, model


def run(args: TrainArgs) -> None:
    """Fine-tune a causal LM densely (fft), through a sparse mask (lota), or with LoRA adapters (lora).

    With --processes N (or under torchrun), the model is sharded over N processes (FSDP2).
    """
    if args.processes > 1 and distributed.launched_processes() == 1:
        validate(args)  # bad input is reported once, before any process starts
        distributed.relaunch_under_torchrun(args.processes, "lota.train")
    try:
        train(args)
    finally:
        distributed.stop()


if __name__ == "__main__":
    run_main(TrainArgs, run)
