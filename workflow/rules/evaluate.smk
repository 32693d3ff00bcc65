# Trained run -> HF export -> samples on the eval split -> scored results/<run>.json.


rule export:
    input:
        base=BASE_MODEL,
        weights=run_weights,
    output:
        directory("work/models/{run}"),
    log:
        "logs/export/{run}.log",
    benchmark:
        "benchmarks/export/{run}.tsv"
    params:
        trust=trust_option(),
    resources:
        **resources("light"),
    conda:
        ENV
    shell:
        "python -m lota.export --base {input.base:q} --weights {input.weights:q} --out {output:q}"
        " {params.trust} > {log:q} 2>&1"


rule generate:
    input:
        model=model_dir,
        data=eval_data,
    output:
        "work/samples/{run}.jsonl",
    log:
        "logs/generate/{run}.log",
    benchmark:
        "benchmarks/generate/{run}.tsv"
    params:
        max_new_tokens=lambda wc: task_setting(parse_run(wc.run).task, "max_new_tokens"),
        options=cli_options(config["generate"] | {"seed": config["seed"]}),
        threads=threads_option("generate"),
        trust=trust_option(),
    resources:
        **resources("generate"),
    conda:
        GENERATION_ENV
    shell:
        "python -m lota.generate --model {input.model:q} --data {input.data:q} --out {output:q}"
        " --max-new-tokens {params.max_new_tokens} {params.options} {params.threads} {params.trust}"
        " > {log:q} 2>&1"


rule evaluate:
    input:
        samples=scored_samples,
        summary=train_summary,
    output:
        "results/{run}.json",
    log:
        "logs/evaluate/{run}.log",
    benchmark:
        "benchmarks/evaluate/{run}.tsv"
    params:
        task=lambda wc: parse_run(wc.run).task,
        method=lambda wc: parse_run(wc.run).method,
        shape=lambda wc: run_shape_options(wc.run),
        summary=lambda wc, input: f"--train-summary {shlex.quote(input.summary)}" if input.summary else "",
        benchmarks=lambda wc: stage_benchmarks(wc.run),
        base_model=config["base_model"]["source"],
        config_json=lambda wc: provenance(wc.run),
    resources:
        **resources("light"),
    conda:
        ENV
    shell:
        "python -m lota.evaluate --samples {input.samples:q} --task {params.task} --out {output:q}"
        " --run {wildcards.run:q} --method {params.method} {params.shape} {params.summary}"
        " --base-model {params.base_model:q} --config-json {params.config_json:q}"
        " --benchmark {params.benchmarks} > {log:q} 2>&1"
