# The base model as a local HF directory, and task data as normalized JSONL records.


rule base_model:
    output:
        directory(BASE_MODEL),
    log:
        "logs/base_model.log",
    benchmark:
        "benchmarks/base_model.tsv"
    params:
        source=config["base_model"]["source"],
        trust=trust_option(),
    resources:
        **resources("light"),
    conda:
        ENV
    shell:
        "python -m lota.base_model --source {params.source:q} --out {output:q} {params.trust} > {log:q} 2>&1"


rule prepare_data:
    input:
        model=BASE_MODEL,
        files=local_task_files,
    output:
        train="work/data/{task}/train.jsonl",
        eval="work/data/{task}/eval.jsonl",
    log:
        "logs/prepare_data/{task}.log",
    benchmark:
        "benchmarks/prepare_data/{task}.tsv"
    params:
        data_dir=cli_options({"data_dir": DATA_DIR}) if DATA_DIR else "",
        trust=trust_option(),
        options=lambda wc: cli_options(
            {
                "train_size": config["tasks"][wc.task]["train_size"],
                "eval_size": config["tasks"][wc.task]["eval_size"],
                "seed": config["seed"],
            }
        ),
    resources:
        **resources("light"),
    conda:
        ENV
    shell:
        "python -m lota.prepare_data --task {wildcards.task:q} --tokenizer {input.model:q}"
        " --train-out {output.train:q} --eval-out {output.eval:q} {params.data_dir} {params.options} {params.trust}"
        " > {log:q} 2>&1"
