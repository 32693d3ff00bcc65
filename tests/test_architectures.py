"""Every causal LM architecture lota is tested on, as tiny random models (tests.conftest.TINY_ARCHITECTURES):
Llama, Qwen2, Mistral, Gemma-2 (no sdpa attention), Phi-3 (fused qkv_proj and gate_up_proj), GPT-NeoX
(its lm_head stored as embed_out) and GPT-2 (Conv1D projections).

In process, per architecture: the default scope ("auto") is exactly the model's projections; FFT, its
task vector, the mask, LoTA (frozen entries bit-identical, the export = base + sparse delta), LoRA and
a task-arithmetic merge. Slow: the whole DAG (FFT, LoTA, LoRA, RoSA, a LoTTO sequence, TIES and the
sparse sum) through snakemake.
"""

import json

import pytest
import torch
from safetensors import safe_open

from lota.core.errors import UserError
from lota.core.io import TensorReader, checkpoint_files
from lota.core.modeling import load_model
from lota.core.scope import SCOPE_KEY, TARGETS_KEY, resolve_settings
from lota.deltas.masks import load_mask
from lota.deltas.sparse import apply_sparse_delta, read_sparse_delta
from lota.export import export
from lota.extract_mask import ExtractMaskArgs
from lota.extract_mask import run as extract_mask
from lota.merge import MergeArgs, merge
from lota.model_scope import ModelScopeArgs
from lota.model_scope import run as model_scope
from lota.task_vector import TaskVectorArgs
from lota.task_vector import run as task_vector
from lota.tasks.records import prepare_split
from lota.training.args import TrainArgs
from lota.training.loop import train
from tests.conftest import TINY_ARCHITECTURES, build_tiny_model, snakemake, tiny_workdir, write_records

LLAMA_LIKE = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
PROJECTIONS = {
    "llama": LLAMA_LIKE,
    "qwen2": LLAMA_LIKE,
    "mistral": LLAMA_LIKE,
    "gemma2": LLAMA_LIKE,
    "phi3": ["down_proj", "gate_up_proj", "o_proj", "qkv_proj"],
    "gpt_neox": ["dense", "dense_4h_to_h", "dense_h_to_4h", "query_key_value"],
    "gpt2": ["c_attn", "c_fc", "c_proj"],
}


@pytest.fixture(scope="module", params=list(TINY_ARCHITECTURES))
def model_dir(request, tmp_path_factory, smol_tokenizer):
    return build_tiny_model(tmp_path_factory.mktemp(request.param) / "model", smol_tokenizer, request.param)


@pytest.fixture(scope="module")
def train_records(tmp_path_factory, gsm8k_dir, smol_tokenizer):
    records = prepare_split("gsm8k", "train", gsm8k_dir, smol_tokenizer, size=8, seed=0)
    return write_records(tmp_path_factory.mktemp("records") / "train.jsonl", records)


def architecture(model_dir) -> str:
    return json.loads((model_dir / "config.json").read_text())["model_type"]


def parameters(model_dir) -> dict[str, torch.Tensor]:
    return {name: tensor.detach() for name, tensor in load_model(model_dir).state_dict().items()}


def stored_names(model_dir) -> list[str]:
    with TensorReader(checkpoint_files(model_dir)) as reader:
        return reader.names()


def test_auto_is_exactly_the_models_projections_and_a_scope_that_covers_nothing_names_them(model_dir, tmp_path):
    model_scope(ModelScopeArgs(model=model_dir, out=tmp_path / "scope.json"))
    found = json.loads((tmp_path / "scope.json").read_text())
    expected = PROJECTIONS[architecture(model_dir)]
    assert found["projections"] == expected
    assert resolve_settings(found["shapes"], ["auto"], ["auto"]) == {SCOPE_KEY: expected, TARGETS_KEY: expected}
    listed = ", ".join(expected)
    message = rf"lora.target_modules \['nothing'\] covers no weight of the model; its projections are: {listed}$"
    with pytest.raises(UserError, match=message):
        resolve_settings(found["shapes"], ["auto"], ["nothing"])


def test_fft_mask_lota_lora_and_a_merge_are_exact(model_dir, train_records, tmp_path, caplog):
    steps = {"data": train_records, "batch_size": 4, "max_length": 256, "max_steps": 2, "lr": 1e-2}
    base = parameters(model_dir)

    train(TrainArgs(model=model_dir, out=tmp_path / "fft", **steps))
    if architecture(model_dir) == "gemma2":  # no sdpa: eager, and the log names the setting
        assert "runs eager (train.fft.attention)" in caplog.text
    task_vector(TaskVectorArgs(base=model_dir, finetuned=tmp_path / "fft/weights.safetensors", out=tmp_path / "tv"))
    extract_mask(ExtractMaskArgs(task_vector=tmp_path / "tv", out=tmp_path / "mask.safetensors", sparsity=0.9))
    masks = load_mask(tmp_path / "mask.safetensors", {name: tensor.shape for name, tensor in base.items()})
    assert sorted({name.split(".")[-2] for name in masks}) == PROJECTIONS[architecture(model_dir)]

    train(TrainArgs(model=model_dir, out=tmp_path / "lota", method="lota", mask=tmp_path / "mask.safetensors", **steps))
    export(model_dir, [tmp_path / "lota/weights.safetensors"], tmp_path / "lota_model")
    exported = parameters(tmp_path / "lota_model")
    with TensorReader([tmp_path / "lota/weights.safetensors"]) as reader:
        delta, shapes = read_sparse_delta(reader)
    rebuilt = {name: tensor.clone() for name, tensor in base.items()}
    apply_sparse_delta(rebuilt, delta, shapes, tmp_path / "lota/weights.safetensors")
    for name, tensor in exported.items():
        assert torch.equal(tensor, rebuilt[name]), name  # the export is base + sparse delta, exactly
        frozen = ~masks[name] if name in masks else torch.ones_like(tensor, dtype=torch.bool)
        assert torch.equal(tensor[frozen], base[name][frozen]), name  # nothing outside the mask moves
    assert any(not torch.equal(exported[name], base[name]) for name in masks)

    train(TrainArgs(model=model_dir, out=tmp_path / "lora", method="lora", **steps))
    export(model_dir, [tmp_path / "lora/weights.safetensors"], tmp_path / "lora_model")
    lora = parameters(tmp_path / "lora_model")
    moved = {name for name, tensor in lora.items() if not torch.equal(tensor, base[name])}
    assert moved and {name.split(".")[-2] for name in moved} <= set(PROJECTIONS[architecture(model_dir)])

    runs = [tmp_path / "fft/weights.safetensors", tmp_path / "lota/weights.safetensors"]
    merge(MergeArgs(base=model_dir, runs=runs, out=tmp_path / "merged", method="task_arithmetic"))
    assert stored_names(tmp_path / "merged") == stored_names(model_dir)  # written as the base stores them
    export(model_dir, [runs[0]], tmp_path / "fft_model")
    merged, tuned = parameters(tmp_path / "merged"), parameters(tmp_path / "fft_model")
    for name, tensor in merged.items():
        expected = base[name] + (tuned[name] - base[name]) + (exported[name] - base[name])
        torch.testing.assert_close(tensor, expected, rtol=0, atol=1e-6, msg=name)


TARGETS = [
    "results/fft_gsm8k.json",
    "results/lota_gsm8k_s90.json",
    "results/lora_gsm8k.json",
    "results/rosa_gsm8k_s90.json",
    "results/cl/lotto_gsm8k-mawps_s90.json",
    "results/merge/ties_gsm8k+mawps.json",
    "results/merge/lotasum_gsm8k+mawps_s90.json",
    "work/release/lota_gsm8k_s90",  # each kind of model card folder
    "work/release/cl/lotto_gsm8k-mawps_s90",
    "work/release/merge/ties_gsm8k+mawps",
]


@pytest.mark.slow
def test_the_whole_dag_runs(model_dir, gsm8k_dir, tmp_path):
    workdir = tiny_workdir(
        tmp_path,
        model_dir,
        gsm8k_dir,
        continual={"sequences": [["gsm8k", "mawps"]], "methods": ["lotto"], "sparsity": 90},
        merge={"tasks": [["gsm8k", "mawps"]], "methods": ["ties", "lotasum"], "density": 0.5},
    )
    # GPT-2's Conv1D projections have no Super-Tuning adapter (tests/test_peft_adapter.py), and
    # per-tensor masks make an adapter of their own size (a global one may be refused as mostly padding)
    adapter = [] if architecture(model_dir) == "gpt2" else ["work/adapters/lota_gsm8k_s90"]
    per_tensor = {"mask": {"granularity": "per_tensor"}}
    done = snakemake(workdir, "--cores", "2", *TARGETS, *adapter, overrides=per_tensor)
    assert done.returncode == 0, done.stderr[-3000:]
    assert all((workdir / folder / "adapter_config.json").is_file() for folder in adapter)
    for target in TARGETS:
        if target.startswith("work/release/"):
            assert "model-index:" in (workdir / target / "README.md").read_text(), target
            continue
        result = json.loads((workdir / target).read_text())
        assert result["run"] in target and result["base_model"], target
    scope = json.loads((workdir / "work" / "model_scope.json").read_text())
    assert scope["projections"] == PROJECTIONS[architecture(model_dir)]
    with safe_open(str(workdir / "work/merge/models/ties_gsm8k+mawps/model.safetensors"), "pt") as merged:
        assert sorted(merged.keys()) == stored_names(model_dir)
