# lota: the LoTA pipeline. Rules live in workflow/rules/, one file per stage family; each calls
# `python -m lota.<stage>`. Run e.g. `snakemake --cores 1 results/lota_gsm8k_s90.json`.
import shlex

from snakemake.utils import min_version

min_version("9.0")

# Every job imports this checkout's lota, whatever --directory it runs in, and also in conda
# environments, which Snakemake starts without PYTHONPATH: the prefix runs inside the job.
# (Snakemake formats the prefix too, hence the doubled braces.)
shell.prefix(f"set -euo pipefail; export PYTHONPATH={shlex.quote(workflow.basedir)}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; ")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/validation.smk"
include: "workflow/rules/continual.smk"
include: "workflow/rules/merge.smk"
include: "workflow/rules/harness.smk"
include: "workflow/rules/report.smk"


# Seconds of work on small files: on a cluster they run on the submitting host, not as jobs.
localrules:
    evaluate,
    evaluate_candidate,
    select_lr,
    evaluate_sequence,
    evaluate_merge,
    lmeval_tasks,
    report,


rule all:
    input:
        "results/base_gsm8k.json",
        "results/fft_gsm8k.json",
        "results/lota_gsm8k_s90.json",
        "results/lora_gsm8k.json",
    default_target: True


# Base, FFT, LoRA and LoTA at every configured sparsity for each sweep task, and the report.
rule sweep:
    input:
        sweep_results,
        rules.report.output,


# Every configured method on every configured task sequence (forgetting), and the report.
rule continual:
    input:
        continual_results,
        rules.report.output,


# Every configured merge method on every configured task set (and lambda), and the report.
rule merge:
    input:
        merge_results,
        rules.report.output,


# lm-evaluation-harness on every model in lmeval.models.
rule lmeval:
    input:
        lmeval_results,


# AlpacaEval on every model in alpaca_eval.models.
rule alpaca_eval:
    input:
        alpaca_eval_results,
