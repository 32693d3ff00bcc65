# What only Snakemake can do: validate the config, constrain the wildcards, and hand wildcard values
# to the plan (lota.pipeline.plan), which owns the names, paths, options and provenance of every job.
import os

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from lota.pipeline import names
from lota.core.config import check_protocol, config_errors, load_schema, record_protocol
from lota.core.errors import UserError
from lota.pipeline.plan import BASE_MODEL, LMEVAL_TASKS, MODEL_SCOPE, PLOTS, Plan, cli_options, key_paths, model_path, shape_options


CONFIG_SCHEMA = workflow.source_path("../schemas/config.schema.yaml")
config_problems = config_errors(config, load_schema(CONFIG_SCHEMA))
if config_problems:
    raise WorkflowError(config_problems[0])
# train.calibration and continual.later_stages override other keys key by key, so they are read
# before the schema's defaults fill them in.
calibration_overrides = config["train"].get("calibration") or {}
later_stage_overrides = (config.get("continual") or {}).get("later_stages") or {}
validate(config, CONFIG_SCHEMA)  # fills in the schema's defaults
try:
    check_protocol(config["protocol"])
    PLAN = Plan(
        config, calibration_overrides, later_stage_overrides, config["data_dir"] or os.environ.get("LOTA_DATA_DIR")
    )
except UserError as error:
    raise WorkflowError(str(error)) from None


# A folder records the protocol its outputs are built under when a run starts (not on a dry run).
onstart:
    record_protocol(config["protocol"])


ENV = "../../envs/lota.yaml"
# The stages that generate (and lm-eval) run in vLLM's environment when the config asks for vLLM.
GENERATION_ENV = "../../envs/vllm.yaml" if config["generate"]["backend"] == "vllm" else ENV


wildcard_constraints:
    task=names.TASK_PATTERN,
    percent=names.NUMBER,
    strategy="|".join(names.MASK_STRATEGIES),
    fisher_kind="|".join(names.SCORE_KINDS),
    variant=names.MASK_VARIANT_PATTERN,
    run=names.RUN_PATTERN,
    lora_run=names.LORA_RUN_PATTERN,
    dense="|".join(names.DENSE_RUN_KINDS),
    seq=names.SEQUENCE_PATTERN,
    model=names.MODEL_PATTERN,
    kind="|".join(names.CALIBRATION_KINDS),
    merge=names.MERGE_PATTERN,
    name=names.NAME_PATTERN,
    seed=names.SEED_PATTERN,
    lr=names.NUMBER,


def model_scope_checked(wildcards=None):
    """The base model's weight shapes, once the model_scope checkpoint has recorded them, with
    mask.scope and lora.target_modules checked against them (lota.pipeline.plan)."""
    return PLAN.checked_model_scope(checkpoints.model_scope.get().output[0])


def sweep_results(wildcards=None):
    return PLAN.sweep_results()


def continual_results(wildcards=None):
    return PLAN.continual_results()


def merge_results(wildcards=None):
    return PLAN.merge_results()


def lmeval_results(wildcards=None):
    return PLAN.harness_results("lmeval")


def alpaca_eval_results(wildcards=None):
    return PLAN.harness_results("alpaca_eval")
