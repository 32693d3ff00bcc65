"""Bad input, stage by stage and in the workflow config: each is refused with a non-zero exit, one
line `error: <message>` that names the offending key, file or value, and no output at all.

The inputs tried are the two tables below: STAGE_CASES, the stage CLIs run in-process through
`run_main` (each row: id, stage, command line, the start of the error line), and CONFIG_CASES,
snakemake dry runs of the workflow (each row: id, target, config overrides, the error's line).
Other test modules check some of these one by one; this one lists them all.

Placeholders in the command lines: {model} the tiny model, {inputs} the folder of bad inputs
(built once, see `inputs`), {records} a valid training file in it, {gsm8k} a valid data folder,
{shared} the shared task data, {out} an empty folder for the outputs. After each case {out} is
still empty and {inputs} holds what it held (no output, no hidden `.<name>.tmp-*` temporary).
"""

from __future__ import annotations

import os
import shutil
import typing
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lota import (
    alpaca_eval,
    base_model,
    complement_mask,
    export,
    extract_mask,
    generate,
    lmeval,
    merge,
    prepare_data,
    select_lr,
    task_vector,
    train,
)
from lota.core.cli import run_main
from lota.core.io import WEIGHTS_FORMAT, TensorReader, checkpoint_files
from lota.extract_mask import save_mask
from lota.pipeline.plan import MODEL_SCOPE
from tests.conftest import SHARED_DATA, refused_plan, snakemake, tiny_workdir, write_records
from tests.test_cli import run_stage
from tests.test_extract_mask import write_task_vector

Q_PROJ = "model.layers.0.self_attn.q_proj.weight"
TRAIN = "--model {model} --data {records} --out {out}/run"
LOTA = TRAIN + " --method lota --mask"


def case(case_id, stage, command, error):
    return pytest.param(stage, command, error, id=case_id)


STAGE_CASES = [
    # out-of-range and wrong-typed values
    case("train-lr-above-1", train, TRAIN + " --lr 5", "lr must be in [0.0, 1.0], got 5.0"),
    case("train-lr-zero", train, TRAIN + " --lr 0", "lr must be > 0"),
    case("train-batch-size-zero", train, TRAIN + " --batch-size 0", "batch_size must be >= 1, got 0"),
    case("train-lr-not-a-number", train, TRAIN + " --lr fast", "argument --lr: invalid float value: 'fast'"),
    case(
        "train-lr-choice-missing",
        train,
        TRAIN + " --lr-from {inputs}/missing.json",
        "learning-rate choice not found: {inputs}/missing.json",
    ),
    case(
        "select-lr-candidate-missing",
        select_lr,
        "--run lota_gsm8k_s90 --candidates 0.0001={inputs}/missing.json --out {out}/lr.json",
        "validation result not found: {inputs}/missing.json",
    ),
    case(
        "generate-batch-size-zero",
        generate,
        "--model {model} --data {records} --out {out}/s.jsonl --batch-size 0",
        "batch_size must be >= 1, got 0",
    ),
    case(
        "extract-mask-sparsity-nan",
        extract_mask,
        "--task-vector {inputs}/task_vector.safetensors --out {out}/mask.safetensors --sparsity nan",
        "sparsity must be in [0.0, 1.0), got nan",
    ),
    case(
        "extract-mask-sparsity-not-a-number",
        extract_mask,
        "--task-vector {inputs}/task_vector.safetensors --out {out}/mask.safetensors --sparsity high",
        "argument --sparsity: invalid float value: 'high'",
    ),
    case(
        "extract-mask-sparsity-missing",
        extract_mask,
        "--task-vector {inputs}/task_vector.safetensors --out {out}/mask.safetensors",
        "the following arguments are required: --sparsity",
    ),
    case(
        "merge-density-above-1",
        merge,
        "--base {model} --runs {inputs}/weights.safetensors {inputs}/weights.safetensors --out {out}/merged"
        " --method ties --density 2",
        "density must be in [0.0, 1.0], got 2.0",
    ),
    # unknown names
    case(
        "prepare-data-unknown-task",
        prepare_data,
        "--task gsm9k --tokenizer {model} --train-out {out}/t.jsonl --eval-out {out}/e.jsonl",
        "unknown task 'gsm9k'; known tasks: alpaca,",
    ),
    case("train-unknown-method", train, TRAIN + " --method dpo", "argument --method: invalid choice: 'dpo'"),
    # data files: missing, empty, malformed, of the wrong kind
    case(
        "train-data-missing",
        train,
        "--model {model} --data {inputs}/missing.jsonl --out {out}/run",
        "training data not found: {inputs}/missing.jsonl",
    ),
    case(
        "train-data-empty",
        train,
        "--model {model} --data {inputs}/empty.jsonl --out {out}/run",
        "training data is empty: {inputs}/empty.jsonl",
    ),
    case(
        "train-data-malformed-line",
        train,
        "--model {model} --data {inputs}/malformed.jsonl --out {out}/run",
        "{inputs}/malformed.jsonl:2: malformed JSON line (Expecting value)",
    ),
    case(
        "generate-data-without-gold",
        generate,
        "--model {model} --data {records} --out {out}/s.jsonl",
        "{records}: record 1 needs a string 'prompt' and a 'gold'",
    ),
    case(
        "prepare-data-task-file-missing",
        prepare_data,
        "--task gsm8k --tokenizer {model} --data-dir {inputs}/data_without_files"
        " --train-out {out}/t.jsonl --eval-out {out}/e.jsonl",
        "GSM8K train data not found: {inputs}/data_without_files/gsm8k/train.jsonl",
    ),
    case(
        "prepare-data-own-task-field-missing",
        prepare_data,
        "--task own --tokenizer {model} --eval-out {out}/e.jsonl"
        ' --task-definitions {{"own":{{"test":"{records}","prompt":"question","gold":"response"}}}}',
        "{records}: record 1 lacks the field 'question' (tasks.own.define.prompt)",
    ),
    # a mask of another model, or not a mask
    case(
        "train-mask-of-other-tensor-names",
        train,
        LOTA + " {inputs}/mask_other_names.safetensors",
        "mask {inputs}/mask_other_names.safetensors covers model.decoder.layers.0.fc1.weight,"
        " which the model does not have",
    ),
    case(
        "train-mask-of-other-shapes",
        train,
        LOTA + " {inputs}/mask_other_shapes.safetensors",
        f"mask {{inputs}}/mask_other_shapes.safetensors: {Q_PROJ} has shape (32, 32), the model's is (16, 16)",
    ),
    case(
        "train-mask-is-a-task-vector",
        train,
        LOTA + " {inputs}/task_vector.safetensors",
        "{inputs}/task_vector.safetensors is not a LoTA mask file (metadata format 'lota-task-vector',"
        " expected 'lota-mask')",
    ),
    case(
        "extract-mask-exclude-of-other-tensor-names",
        extract_mask,
        "--task-vector {inputs}/task_vector.safetensors --out {out}/mask.safetensors --sparsity 0.5"
        " --exclude {inputs}/mask_other_names.safetensors",
        "mask {inputs}/mask_other_names.safetensors covers model.decoder.layers.0.fc1.weight,"
        " which the task vector in scope does not have",
    ),
    case(
        "complement-mask-of-two-models",
        complement_mask,
        "--masks {inputs}/mask_other_shapes.safetensors {inputs}/mask_other_names.safetensors"
        " --out {out}/flip.safetensors",
        "mask {inputs}/mask_other_names.safetensors covers model.decoder.layers.0.fc1.weight,"
        " which {inputs}/mask_other_shapes.safetensors does not have",
    ),
    # truncated and corrupt safetensors
    case(
        "task-vector-truncated-weights",
        task_vector,
        "--base {model} --finetuned {inputs}/truncated.safetensors --out {out}/tv.safetensors",
        f"cannot read safetensors file {{inputs}}/truncated.safetensors: tensor {Q_PROJ} has bad data offsets",
    ),
    case(
        "task-vector-corrupt-header",
        task_vector,
        "--base {model} --finetuned {inputs}/corrupt.safetensors --out {out}/tv.safetensors",
        "cannot read safetensors file {inputs}/corrupt.safetensors: Expecting value",
    ),
    case(
        "extract-mask-truncated-task-vector",
        extract_mask,
        "--task-vector {inputs}/truncated.safetensors --out {out}/mask.safetensors --sparsity 0.9",
        "cannot read safetensors file {inputs}/truncated.safetensors: tensor",
    ),
    case(
        "extract-mask-corrupt-task-vector",
        extract_mask,
        "--task-vector {inputs}/corrupt.safetensors --out {out}/mask.safetensors --sparsity 0.9",
        "cannot read safetensors file {inputs}/corrupt.safetensors: Expecting value",
    ),
    case(
        "train-mask-truncated",
        train,
        LOTA + " {inputs}/truncated.safetensors",
        "cannot read safetensors file {inputs}/truncated.safetensors: tensor",
    ),
    case(
        "train-mask-corrupt",
        train,
        LOTA + " {inputs}/corrupt.safetensors",
        "cannot read safetensors file {inputs}/corrupt.safetensors: Expecting value",
    ),
    case(
        "merge-run-corrupt",
        merge,
        "--base {model} --runs {inputs}/corrupt.safetensors {inputs}/weights.safetensors --out {out}/merged"
        " --method task_arithmetic",
        "cannot read safetensors file {inputs}/corrupt.safetensors: Expecting value",
    ),
    case(
        "train-base-checkpoint-truncated",
        train,
        "--model {inputs}/truncated_model --data {records} --out {out}/run",
        "cannot load a causal LM from {inputs}/truncated_model: Error while deserializing header",
    ),
    case(
        "export-base-checkpoint-truncated",
        export,
        "--base {inputs}/truncated_model --weights {inputs}/weights.safetensors --out {out}/model",
        "cannot load a causal LM from {inputs}/truncated_model: Error while deserializing header",
    ),
    case(
        "base-model-checkpoint-truncated",
        base_model,
        "--source {inputs}/truncated_model --out {out}/base",
        "cannot load base model '{inputs}/truncated_model': Error while deserializing header",
    ),
    # a base model that is not a model
    case(
        "train-model-empty-dir",
        train,
        "--model {inputs}/empty_dir --data {records} --out {out}/run",
        "not a model directory (no config.json): {inputs}/empty_dir",
    ),
    case(
        "generate-model-is-a-file",
        generate,
        "--model {inputs}/file --data {inputs}/eval.jsonl --out {out}/s.jsonl",
        "not a model directory (no config.json): {inputs}/file",
    ),
    case(
        "task-vector-base-empty-dir",
        task_vector,
        "--base {inputs}/empty_dir --finetuned {inputs}/weights.safetensors --out {out}/tv.safetensors",
        "no safetensors checkpoint (model.safetensors) in {inputs}/empty_dir",
    ),
    case(
        "base-model-source-empty-dir",
        base_model,
        "--source {inputs}/empty_dir --out {out}/base",
        "base model directory has no config.json: {inputs}/empty_dir",
    ),
    case(
        "base-model-source-is-a-file",
        base_model,
        "--source {inputs}/file --out {out}/base",
        "base model source is a file, neither a model directory nor a .gguf file: {inputs}/file",
    ),
    # a tokenizer without the chat template a stage needs
    case(
        "prepare-data-required-chat-template",
        prepare_data,
        "--task gsm8k --tokenizer {inputs}/no_chat_template --data-dir {gsm8k} --require-chat-template"
        " --train-out {out}/t.jsonl --eval-out {out}/e.jsonl",
        "the tokenizer of {inputs}/no_chat_template has no chat template (require_chat_template is set)",
    ),
    case(
        "lmeval-apply-chat-template",
        lmeval,
        "--model {inputs}/no_chat_template --tasks gsm8k --apply-chat-template --out {out}/lmeval.json",
        "the model {inputs}/no_chat_template has no chat template to apply (config key lmeval.apply_chat_template)",
    ),
    case(
        "alpaca-eval-local-judge",
        alpaca_eval,
        "--samples {inputs}/alpaca_samples.jsonl --data-dir {shared} --judge local"
        " --judge-model {inputs}/no_chat_template --out {out}/alpaca_eval.json",
        "the judge model {inputs}/no_chat_template has no chat template to format the judge's prompt",
    ),
    # outputs that cannot be written: a parent that is a file stops root too, unlike permissions
    case(
        "train-out-under-a-file",
        train,
        "--model {model} --data {records} --out {inputs}/file/run",
        "cannot create output folder {inputs}/file: File exists",
    ),
    case(
        "extract-mask-out-under-a-file",
        extract_mask,
        "--task-vector {inputs}/task_vector.safetensors --out {inputs}/file/mask.safetensors --sparsity 0.5",
        "cannot create output folder {inputs}/file: File exists",
    ),
    case(
        "prepare-data-eval-out-under-a-file",
        prepare_data,
        "--task gsm8k --tokenizer {model} --data-dir {gsm8k}"
        " --train-out {out}/t.jsonl --eval-out {inputs}/file/e.jsonl",
        "cannot create output folder {inputs}/file: File exists",
    ),
    case(
        "generate-out-under-a-file",
        generate,
        "--model {model} --data {inputs}/eval.jsonl --out {inputs}/file/s.jsonl --max-new-tokens 1",
        "cannot create output folder {inputs}/file: File exists",
    ),
    case(
        "task-vector-out-is-a-directory",
        task_vector,
        "--base {model} --finetuned {inputs}/weights.safetensors --out {inputs}/empty_dir",
        "cannot write output {inputs}/empty_dir: Is a directory",
    ),
]

CONFIG_CASES = [
    pytest.param(
        "results/fft_gsm8k.json",
        {"tracking": {"wandb": "cloud"}},
        "config key tracking.wandb: 'cloud' is not one of",
        id="config-tracking-unknown-wandb-mode",
    ),
    pytest.param(
        "work/release/base_gsm8k",
        None,
        "work/release/base_gsm8k: the base model is no fine-tune, so it has no model card here",
        id="target-model-card-of-the-base-model",
    ),
    pytest.param(
        "work/adapters/fft_gsm8k",
        None,
        "work/adapters/fft_gsm8k: only LoTA runs are written as PEFT adapters; a fft run's weights are no",
        id="target-adapter-of-a-dense-run",
    ),
    pytest.param(
        "results/fft_gsm8k.json",
        {"data_dir": "/data/{HOME}"},
        "config key data_dir (or $LOTA_DATA_DIR): braces are not allowed in '/data/{HOME}'",
        id="config-data-dir-with-braces",
    ),
    pytest.param(
        "results/fft_gsm8k.json",
        {"data_dir": "/no/such/folder"},
        "config key data_dir (or $LOTA_DATA_DIR): no folder /no/such/folder",
        id="config-data-dir-not-a-folder",
    ),
    pytest.param(
        "results/fft_gsm8k.json",
        {"base_model": {"source": "/no/such/model"}},
        "config key base_model.source: base model not found: '/no/such/model' is neither a local path nor a hub id",
        id="config-base-model-not-found",
    ),
    pytest.param(
        "results/fft_gsm8k.json",
        {"train": {"lota": {"lr": "fast"}}},
        "config key train.lota.lr: 'fast' is not of type 'number'",
        id="config-lr-a-string",
    ),
    pytest.param(
        "sweep",
        {"sweep": {"sparsities": [90, 100]}},
        "config key sweep.sparsities.1: 100 is greater than or equal to the maximum of 100",
        id="config-sparsity-100",
    ),
    pytest.param(
        "results/fft_gsm8k.json",
        {"train": {"fft": {"lr": 0}}},
        "config key train.fft.lr: 0 is less than or equal to the minimum of 0",
        id="config-lr-zero",
    ),
    pytest.param(
        "results/fft_gsm8k.json",
        {"train": {"lota": {"batch_size": 0}}},
        "config key train.lota.batch_size: 0 is less than the minimum of 1",
        id="config-batch-size-zero",
    ),
    pytest.param(
        "results/fft_gsm8k.json",
        {"train": {"lota": {"learning_rate": 1e-4}}},
        "config key train.lota: Additional properties are not allowed ('learning_rate' was unexpected)",
        id="config-unknown-key",
    ),
    pytest.param(
        "results/foo_gsm8k.json", {}, "run name 'foo_gsm8k' is not base_<task>, fft_<task>", id="target-unknown-method"
    ),
    pytest.param(
        "results/fft_boolq.json",
        {},
        "unknown task 'boolq': not under config key 'tasks'",
        id="target-task-not-configured",
    ),
    pytest.param(
        "results/fft_gsm8k.json",
        {"tasks": {"capitals": {}}},
        "config key tasks: unknown task 'capitals'; known tasks: alpaca,",
        id="config-own-task-without-definition",
    ),
    pytest.param(
        "results/fft_gsm8k.json",
        {"tasks": {"capitals": {"define": {"test": "/no/such.jsonl", "prompt": "q", "gold": "a"}}}},
        "config key tasks.capitals.define.test: no file /no/such.jsonl",
        id="config-own-task-file-missing",
    ),
    pytest.param(
        "results/fft_gsm8k.json",
        {"tasks": {"capitals": {"define": {"test": "/no/such.jsonl", "prompt": "q", "scorer": "bleu"}}}},
        "config key tasks.capitals.define.scorer: 'bleu' is not one of",
        id="config-own-task-unknown-scorer",
    ),
]


def tree(folder: Path) -> set[str]:
    """Every path under `folder`, hidden temporaries included."""
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_model) -> Path:
    """The bad inputs (and a few good ones the stages need to reach them), built once."""
    root = tmp_path_factory.mktemp("bad_inputs")
    write_records(root / "records.jsonl", [{"prompt": "Q: 1+1?\nA:", "response": " 2"}])
    write_records(root / "eval.jsonl", [{"id": 0, "prompt": "Q: 1+1?\nA:", "gold": "2"}])
    write_records(root / "alpaca_samples.jsonl", [{"id": 0, "prompt": "...", "completion": "Hello."}])
    (root / "empty.jsonl").write_text("")
    (root / "malformed.jsonl").write_text('{"prompt": "Q", "response": "A"}\n{"prompt": \n')
    (root / "file").write_text("a regular file where a directory goes\n")
    (root / "empty_dir").mkdir()
    (root / "data_without_files" / "gsm8k").mkdir(parents=True)

    vector = write_task_vector(root / "task_vector.safetensors", {Q_PROJ: torch.randn(16, 16)})
    (root / "truncated.safetensors").write_bytes(vector.read_bytes()[: vector.stat().st_size // 2])
    # A header length that fits the file, over bytes that are not JSON.
    (root / "corrupt.safetensors").write_bytes((16).to_bytes(8, "little") + b"garbage, no JSON" + bytes(64))
    with TensorReader(checkpoint_files(tiny_model)) as base:
        save_file(
            {"model.norm.weight": base.get("model.norm.weight")},
            str(root / "weights.safetensors"),
            {"format": WEIGHTS_FORMAT},
        )
    # Masks of other models: an OPT-style tensor name, and this model's name at another model's shape.
    save_mask(root / "mask_other_names.safetensors", {"model.decoder.layers.0.fc1.weight": torch.ones(4, 4) > 0}, {})
    save_mask(root / "mask_other_shapes.safetensors", {Q_PROJ: torch.ones(32, 32) > 0}, {})

    shutil.copytree(tiny_model, root / "truncated_model")
    checkpoint = root / "truncated_model" / "model.safetensors"
    checkpoint.write_bytes(checkpoint.read_bytes()[:100_000])
    # transformers saves a tokenizer's chat template as chat_template.jinja: the copy has none.
    shutil.copytree(tiny_model, root / "no_chat_template", ignore=shutil.ignore_patterns("chat_template.jinja"))
    return root


@pytest.fixture
def inputs_tree(inputs) -> set[str]:
    return tree(inputs)


@pytest.mark.parametrize(("stage", "command", "error"), STAGE_CASES)
def test_a_stage_refuses_bad_input_in_one_line_and_writes_nothing(
    stage, command, error, inputs, inputs_tree, tiny_model, gsm8k_dir, tmp_path, capsys
):
    places = {
        "model": tiny_model,
        "inputs": inputs,
        "records": inputs / "records.jsonl",
        "gsm8k": gsm8k_dir,
        "shared": SHARED_DATA,
        "out": tmp_path,
    }
    argv = [part.format(**places) for part in command.split()]
    args_type = typing.get_type_hints(stage.run)["args"]
    with pytest.raises(SystemExit) as exit_status:
        run_main(args_type, stage.run, argv)
    stderr = capsys.readouterr().err
    assert exit_status.value.code != 0
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and stderr.rstrip().endswith(errors[0]), stderr
    assert errors[0].startswith("error: " + error.format(**places)), errors[0]
    assert not any(tmp_path.iterdir()) and tree(inputs) == inputs_tree


def test_the_exit_status_and_line_are_the_same_from_the_command_line(inputs, tmp_path, capsys):
    stage, command, _ = next(param.values for param in STAGE_CASES if param.id == "extract-mask-sparsity-not-a-number")
    argv = [part.format(inputs=inputs, out=tmp_path) for part in command.split()]
    with pytest.raises(SystemExit) as in_process:
        run_main(typing.get_type_hints(stage.run)["args"], stage.run, argv)
    done = run_stage(stage.__name__, *argv)
    assert done.returncode == in_process.value.code != 0
    assert done.stderr.strip() == capsys.readouterr().err.strip()
    assert not any(tmp_path.iterdir())


@pytest.fixture(scope="module")
def config_plans(tmp_path_factory, tiny_model, gsm8k_dir) -> dict[str, tuple[Path, str]]:
    """Every CONFIG_CASES dry run, run side by side (each is seconds of snakemake start-up): id -> (workdir, output)."""
    template = tiny_workdir(tmp_path_factory.mktemp("bad_config"), tiny_model, gsm8k_dir)
    workdirs = {param.id: tmp_path_factory.mktemp(param.id) for param in CONFIG_CASES}
    for workdir in workdirs.values():
        shutil.copy(template / "config.yaml", workdir)

    def plan(param):
        target, overrides, _ = param.values
        return param.id, (workdirs[param.id], refused_plan(workdirs[param.id], target, overrides=overrides))

    with ThreadPoolExecutor(max_workers=len(os.sched_getaffinity(0))) as pool:
        return dict(pool.map(plan, CONFIG_CASES))


@pytest.mark.parametrize(("target", "overrides", "error"), CONFIG_CASES)
def test_the_workflow_refuses_bad_config_and_targets_in_one_line(target, overrides, error, config_plans, request):
    workdir, output = config_plans[request.node.callspec.id]
    assert any(error in line for line in output.splitlines()), output[-2000:]
    assert not (workdir / "results").exists() and not (workdir / "work").exists()


def test_a_scope_that_covers_no_weight_stops_before_any_training(tmp_path, tiny_model, gsm8k_dir):
    """In a new folder the model_scope checkpoint records the base model's shapes and the run stops
    there; once they are recorded, a dry run refuses such a setting before any job."""
    workdir = tiny_workdir(tmp_path, tiny_model, gsm8k_dir)
    expected = "covers no weight of the model; its projections are: down_proj, gate_proj, k_proj, o_proj, q_proj,"
    stopped = snakemake(
        workdir, "--cores", "1", "results/lora_gsm8k.json", overrides={"lora": {"target_modules": ["c_attn"]}}
    )
    assert stopped.returncode != 0
    assert any(f"lora.target_modules ['c_attn'] {expected}" in line for line in stopped.stderr.splitlines()), (
        stopped.stderr[-2000:]
    )
    assert (workdir / MODEL_SCOPE).exists() and not (workdir / "work" / "runs").exists()
    output = refused_plan(workdir, "results/lota_gsm8k_s90.json", overrides={"mask": {"scope": ["c_attn"]}})
    assert any(f"mask.scope ['c_attn'] {expected}" in line for line in output.splitlines()), output[-2000:]
