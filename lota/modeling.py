"""Loading HF causal LMs and tokenizers from local directories, and measuring memory."""

from __future__ import annotations

import contextlib
import os
import resource
import sys
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from lota.errors import UserError


def set_threads(count: int) -> int:
    """Use `count` CPU threads (0: this process's share of the CPUs it may run on) and return the number.

    Explicit, because Snakemake sets OMP_NUM_THREADS to the job's `threads` (1 by default),
    while the CPU affinity already reflects what a cluster allocated to the job. The processes
    torchrun starts on one machine (LOCAL_WORLD_SIZE) share its CPUs.
    """
    if count < 0:
        raise UserError(f"threads must be >= 0, got {count}")
    sharing = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    chosen = count or max(1, len(os.sched_getaffinity(0)) // sharing)
    torch.set_num_threads(chosen)
    return chosen


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def inference_dtype(on: torch.device) -> torch.dtype:
    """The dtype models run in for generation and evaluation: bf16 on a GPU, fp32 on a CPU."""
    return torch.bfloat16 if on.type == "cuda" else torch.float32


def check_model_dir(model_dir: Path) -> None:
    if not (Path(model_dir) / "config.json").is_file():
        raise UserError(f"not a model directory (no config.json): {model_dir}")


def load_model(
    model_dir: Path,
    dtype: torch.dtype = torch.float32,
    trust_remote_code: bool = False,
    on: torch.device | None = None,
    attention: str | None = None,
) -> PreTrainedModel:
    """A causal LM from a local directory; `attention` picks the kernel (sdpa, eager; None: the model's)."""
    check_model_dir(model_dir)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=dtype, trust_remote_code=trust_remote_code, attn_implementation=attention
        )
    except (OSError, ValueError, SafetensorError) as error:  # SafetensorError: a truncated or corrupt checkpoint
        raise UserError(f"cannot load a causal LM from {model_dir}: {str(error).splitlines()[0]}") from None
    return model.to(on or device())


def load_tokenizer(model_dir: Path, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    check_model_dir(model_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot load a tokenizer from {model_dir}: {str(error).splitlines()[0]}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def reset_peak_memory(on: torch.device) -> None:
    """Restart the peak-memory measurement, so that a figure covers training and not loading.

    On CPU this resets the kernel's resident-set high-water mark (Linux only; elsewhere the peak
    stays the process's since its start).
    """
    if on.type == "cuda":
        torch.cuda.reset_peak_memory_stats(on)
        return
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory_mb(on: torch.device) -> float:
    """Peak memory since the start or the last reset: allocated GPU memory on CUDA, resident set on CPU."""
    if on.type == "cuda":
        return torch.cuda.max_memory_allocated(on) / 2**20
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10
