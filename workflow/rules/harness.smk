# The standard harnesses on any model the pipeline builds (a run, a task sequence or a merge):
# results/lmeval/<model>.json from lm-evaluation-harness, results/alpaca_eval/<model>.json from
# AlpacaEval's judge.


rule lmeval_tasks:
    input:
        lambda wc: PLAN.lmeval_dataset_files(),
    output:
        directory(LMEVAL_TASKS),
    log:
        "logs/lmeval/tasks.log",
    benchmark:
        "benchmarks/lmeval/tasks.tsv"
    params:
        tasks=cli_options({"tasks": config["lmeval"]["tasks"]}),
        data_dir=PLAN.data_dir,
    resources:
        **PLAN.resources("light"),
    conda:
        ENV
    shell:
        "python -m lota.lmeval_tasks {params.tasks} --data-dir {params.data_dir:q} --out {output:q} > {log:q} 2>&1"


rule evaluate_lmeval:
    input:
        unpack(lambda wc: PLAN.lmeval_inputs(wc.name)),
    output:
        result="results/lmeval/{name}.json",
        samples="work/lmeval/samples/{name}.jsonl",
    log:
        "logs/lmeval/{name}.log",
    benchmark:
        "benchmarks/lmeval/{name}.tsv"
    params:
        options=lambda wc: PLAN.lmeval_options(wc.name),
        threads=PLAN.threads_option("generate"),
        trust=PLAN.trust_option(),
        config_json=lambda wc: PLAN.harness_provenance(wc.name, "lmeval"),
    resources:
        **PLAN.resources("generate"),
    conda:
        GENERATION_ENV
    shell:
        "python -m lota.lmeval --model {input.model:q} --out {output.result:q} --samples {output.samples:q}"
        " --name {wildcards.name:q} {params.options} {params.threads} {params.trust}"
        " --config-json {params.config_json:q} {resources.tracking} > {log:q} 2>&1"


use rule generate as generate_alpaca with:
    input:
        model=lambda wc: PLAN.exported_model(wc.name),
        data="work/data/alpaca/eval.jsonl",
    output:
        "work/alpaca_eval/samples/{name}.jsonl",
    log:
        "logs/alpaca_eval/generate/{name}.log",
    benchmark:
        "benchmarks/alpaca_eval/generate/{name}.tsv"
    params:
        max_new_tokens=lambda wc: PLAN.task_setting(PLAN.check_task("alpaca"), "max_new_tokens"),
        options=lambda wc: PLAN.generate_options(wc.name),


rule evaluate_alpaca:
    input:
        unpack(lambda wc: PLAN.alpaca_eval_inputs(wc.name)),
    output:
        result="results/alpaca_eval/{name}.json",
        annotations="work/alpaca_eval/annotations/{name}.json",
    log:
        "logs/alpaca_eval/{name}.log",
    benchmark:
        "benchmarks/alpaca_eval/{name}.tsv"
    params:
        options=lambda wc: PLAN.alpaca_eval_options(wc.name),
        threads=PLAN.threads_option("generate"),
        trust=PLAN.trust_option(),
        config_json=lambda wc: PLAN.harness_provenance(wc.name, "alpaca_eval", {"task": PLAN.task_provenance("alpaca")}),
    resources:
        **PLAN.resources("generate"),
    conda:
        ENV
    shell:
        "python -m lota.alpaca_eval --samples {input.samples:q} --out {output.result:q}"
        " --annotations {output.annotations:q} --name {wildcards.name:q} {params.options} {params.threads}"
        " {params.trust} --config-json {params.config_json:q} {resources.tracking} > {log:q} 2>&1"
