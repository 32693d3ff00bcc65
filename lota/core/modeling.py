"""Loading HF causal LMs and tokenizers from local directories, and measuring memory."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import resource
import sys
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.conversion_mapping import get_model_conversion_mapping
from transformers.core_model_loading import WeightRenaming, rename_source_key
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

from lota.core.errors import UserError
from lota.core.io import TensorReader, atomic_path, checkpoint_files
from lota.core.model_source import resolve_source

log = logging.getLogger("lota.modeling")


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
    attention_setting: str = "attention",
) -> PreTrainedModel:
    """A causal LM from a local directory; `attention` picks the kernel (sdpa, eager; None: the model's).
    An architecture without sdpa (Gemma-2) runs eager, with a log line naming `attention_setting`."""
    check_model_dir(model_dir)
    if attention == "sdpa" and not supports_sdpa(model_dir):
        log.warning("%s: this architecture has no sdpa attention, so it runs eager (%s)", model_dir, attention_setting)
        attention = "eager"
    try:
        model = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=dtype, trust_remote_code=trust_remote_code, attn_implementation=attention
        )
    except (OSError, ValueError, SafetensorError) as error:  # SafetensorError: a truncated or corrupt checkpoint
        raise UserError(f"cannot load a causal LM from {model_dir}: {str(error).splitlines()[0]}") from None
    return model.to(on or device())


@functools.lru_cache(maxsize=8)  # stages read one checkpoint tensor by tensor (lota.training.trainable)
def checkpoint_renames(model_dir: Path, stored: tuple[str, ...]) -> dict[str, str]:
    """Stored name -> parameter name, for each stored tensor the model's parameters call otherwise.

    These are transformers' own renames on load (GPT-NeoX stores its lm_head as embed_out), read off
    the architecture built on the meta device. A model with custom code gets none, as transformers
    gives it none; a checkpoint whose tensors transformers converts (fuses or splits) on load is
    refused, since no tensor of it is a parameter.
    """
    try:
        config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False)
    except ValueError:  # custom code (an unknown model_type): transformers renames nothing for it either
        return {}
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    transforms = get_model_conversion_mapping(model)
    renamings = [transform for transform in transforms if isinstance(transform, WeightRenaming)]
    converters = [transform for transform in transforms if not isinstance(transform, WeightRenaming)]
    parameters = model.state_dict()
    renames = {}
    for name in stored:
        renamed, converted = rename_source_key(name, renamings, converters, model.base_model_prefix, parameters)
        if converted is not None:
            raise UserError(
                f"{model_dir}: transformers converts the stored tensor {name} on load ({type(model).__name__}),"
                " so its checkpoint cannot be read tensor by tensor"
            )
        if renamed != name:
            renames[name] = renamed
    return renames


def open_checkpoint(model_dir: Path) -> TensorReader:
    """A reader of an HF checkpoint's tensors under the names of the model's parameters."""
    files = checkpoint_files(model_dir)
    with TensorReader(files) as stored:
        names = tuple(stored.names())
    return TensorReader(files, checkpoint_renames(Path(model_dir), names))


def supports_sdpa(model_dir: Path) -> bool:
    """Whether transformers' class for the model's architecture runs sdpa attention (a model with
    custom code is taken at its word)."""
    try:
        config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False)
    except ValueError:  # custom code: its own class decides when it loads
        return True
    model_class = MODEL_FOR_CAUSAL_LM_MAPPING.get(type(config), None)
    return model_class is None or bool(model_class._supports_sdpa)


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


def prepare_base_model(source: str, out: Path, trust_remote_code: bool = False) -> Path:
    location, gguf_file = resolve_source(source)
    options = {"gguf_file": gguf_file} if gguf_file else {}
    log.info("loading %s%s", location, f" ({gguf_file})" if gguf_file else "")
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code, **options)
        model = AutoModelForCausalLM.from_pretrained(
            location, dtype=torch.float32, trust_remote_code=trust_remote_code, **options
        )
    except (OSError, ValueError, ImportError, SafetensorError) as error:  # SafetensorError: a truncated checkpoint
        raise UserError(f"cannot load base model {source!r}: {str(error).splitlines()[0]}") from None
    # A dequantized GGUF still carries its quantization_config, which save_pretrained refuses.
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
        model.hf_quantizer = None
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    with atomic_path(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    log.info("wrote %s (%d parameters)", out, sum(p.numel() for p in model.parameters()))
    return out
