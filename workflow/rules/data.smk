# The base model as a local HF directory, its scope checked, and task data as normalized JSONL records: the base seed's
# training, validation and evaluation records, and each other seed's own training subset.


rule base_model:
    output:
        directory(BASE_MODEL),
    log:
        "logs/base_model.log",
    benchmark:
        "benchmarks/base_model.tsv"
    params:
        source=config["base_model"]["source"],
        trust=PLAN.trust_option(),
    resources:
        **PLAN.resources("light"),
    conda:
        ENV
    shell:
        "python -m lota.base_model --source {params.source:q} --out {output:q} {params.trust} > {log:q} 2>&1"


# The base model's weight shapes, which mask.scope and lora.target_modules are checked against: a
# checkpoint, so that once it exists every training's input function checks them (model_scope_checked)
# before any training, in the same run. Its output is the model's, not the settings': a changed
# setting reruns the masks and LoRA runs, not this job or the dense runs.
checkpoint model_scope:
    input:
        model=BASE_MODEL,
    output:
        MODEL_SCOPE,
    log:
        "logs/model_scope.log",
    benchmark:
        "benchmarks/model_scope.tsv"
    resources:
        **PLAN.resources("light"),
    conda:
        ENV
    shell:
        "python -m lota.model_scope --model {input.model:q} --out {output:q} > {log:q} 2>&1"


rule prepare_data:
    input:
        model=BASE_MODEL,
        files=lambda wc: PLAN.local_task_files(wc.task),
    output:
        train="work/data/{task}/train.jsonl",
        valid="work/data/{task}/valid.jsonl",
        eval="work/data/{task}/eval.jsonl",
    log:
        "logs/prepare_data/{task}.log",
    benchmark:
        "benchmarks/prepare_data/{task}.tsv"
    params:
        data_dir=cli_options({"data_dir": PLAN.data_dir}) if PLAN.data_dir else "",
        trust=PLAN.trust_option(),
        options=lambda wc: PLAN.prepare_data_options(wc.task),
        splits=lambda wc, output: cli_options({"valid_out": output.valid, "eval_out": output.eval}),
    resources:
        **PLAN.resources("light"),
    conda:
        ENV
    shell:
        "python -m lota.prepare_data --task {wildcards.task:q} --tokenizer {input.model:q}"
        " --train-out {output.train:q} {params.splits} {params.data_dir} {params.options} {params.trust}"
        " > {log:q} 2>&1"


# A replicate's training subset and order: drawn with its seed from the training records left after
# the validation records (the same for every seed) are carved out.
use rule prepare_data as prepare_replicate_data with:
    output:
        train="work/data/{task}/train_seed{seed}.jsonl",
    log:
        "logs/prepare_data/{task}_seed{seed}.log",
    benchmark:
        "benchmarks/prepare_data/{task}_seed{seed}.tsv"
    params:
        options=lambda wc: PLAN.prepare_data_options(f"{wc.task}_seed{wc.seed}"),
        splits="",
