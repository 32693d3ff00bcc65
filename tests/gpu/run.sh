#!/usr/bin/env bash
# The GPU check, in one call of at most 5 minutes on a bare CUDA machine with only the working tree
# (docs/engine.md: GPU check). Stages, each under its own time limit, each writing its results to OUTDIR as
# it ends (the benchmark after every run), so that a stage cut short loses nothing before it:
#   1. the `gpu`-marked tests (tests/gpu/test_cuda.py): the CUDA paths of the engine, resuming and generation;
#   2. the engine benchmark (lota.bench) on random Llama models built on the GPU from configs,
#      a 1B and an 8B shape: LoTA at 99% and 90%, LoRA r16, RoSA, and FFT last (it may run out of memory).
# On a machine without CUDA the tests skip and the benchmark runs on a tiny config instead.
#
#   tests/gpu/run.sh [OUTDIR]        # default: $OUT (the device tool's), else ./gpu-check
#
# Imports on this path: PyTorch, transformers, PEFT, safetensors, pytest and the standard library.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUTDIR=${1:-${OUT:-gpu-check}}
mkdir -p "$OUTDIR"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PYTHON=${PYTHON:-python3}
failed=0

stage() {  # stage NAME LIMIT_S COMMAND...: run under a time limit, log to OUTDIR/NAME.log, record the exit code
    local name=$1 limit=$2
    shift 2
    local started=$SECONDS
    timeout -k 10 "$limit" "$@" >"$OUTDIR/$name.log" 2>&1
    local code=$?
    echo "$name exit=$code seconds=$((SECONDS - started)) limit=$limit" | tee -a "$OUTDIR/stages.txt"
    [ "$code" -eq 0 ] || failed=1
}

"$PYTHON" - >"$OUTDIR/machine.txt" 2>&1 <<'EOF'
import platform, torch, transformers, peft, safetensors
print("python", platform.python_version(), "torch", torch.__version__, "transformers", transformers.__version__,
      "peft", peft.__version__, "safetensors", safetensors.__version__)
if torch.cuda.is_available():
    properties = torch.cuda.get_device_properties(0)
    print(properties.name, f"{properties.total_memory / 2**30:.1f} GiB", "CUDA", torch.version.cuda)
else:
    print("no CUDA device:", platform.processor() or platform.machine(), torch.get_num_threads(), "threads")
EOF
cat "$OUTDIR/machine.txt"

stage gpu_tests 60 "$PYTHON" -m pytest -m gpu tests/gpu -p no:cacheprovider -rs -q --junitxml="$OUTDIR/gpu_tests.xml"

bench=("$PYTHON" -m lota.bench --weights bf16 --activation-checkpointing --batch-size 4 --seq-len 1024
       --warmup-steps 1 --steps 3 --runs lota_s99 lota_s90 lora_r16 rosa_s99 fft)
if "$PYTHON" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
    stage bench_1b 110 "${bench[@]}" --model-config tests/gpu/llama-1b.json --out "$OUTDIR/bench_1b.json"
    stage bench_8b 120 "${bench[@]}" --model-config tests/gpu/llama-8b.json --out "$OUTDIR/bench_8b.json"
else
    stage bench_tiny 120 "${bench[@]}" --model-config tests/gpu/llama-tiny.json --batch-size 2 --seq-len 64 \
        --threads 1 --out "$OUTDIR/bench_tiny.json"
fi
cat "$OUTDIR"/bench_*.log | grep -v "Warning\|warnings.warn" || true
exit $failed
