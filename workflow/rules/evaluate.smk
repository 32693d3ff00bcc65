# Trained run -> HF export -> samples on the eval split -> scored results/<run>.json.


rule export:
    input:
        base=BASE_MODEL,
        weights=lambda wc: PLAN.run_weights(wc.run),
    output:
        directory("work/models/{run}"),
    log:
        "logs/export/{run}.log",
    benchmark:
        "benchmarks/export/{run}.tsv"
    params:
        trust=PLAN.trust_option(),
    resources:
        **PLAN.resources("light"),
    conda:
        ENV
    shell:
        "python -m lota.export --base {input.base:q} --weights {input.weights:q} --out {output:q}"
        " {params.trust} > {log:q} 2>&1"


# Not part of any result: built when asked for (snakemake work/adapters/lota_gsm8k_s90).
rule peft_adapter:
    input:
        base=BASE_MODEL,
        weights=lambda wc: PLAN.adapter_weights(wc.run),
    output:
        directory("work/adapters/{run}"),
    log:
        "logs/peft_adapter/{run}.log",
    benchmark:
        "benchmarks/peft_adapter/{run}.tsv"
    params:
        options=PLAN.base_model_name_option(),
        trust=PLAN.trust_option(),
    resources:
        **PLAN.resources("light"),
    conda:
        ENV
    shell:
        "python -m lota.peft_adapter --base {input.base:q} --weights {input.weights:q} --out {output:q}"
        " {params.options} {params.trust} > {log:q} 2>&1"


rule generate:
    input:
        model=lambda wc: PLAN.model_dir(wc.run),
        data=lambda wc: PLAN.eval_data(wc.run),
    output:
        "work/samples/{run}.jsonl",
    log:
        "logs/generate/{run}.log",
    benchmark:
        "benchmarks/generate/{run}.tsv"
    params:
        max_new_tokens=lambda wc: PLAN.task_setting(PLAN.run(wc.run).task, "max_new_tokens"),
        options=lambda wc: PLAN.generate_options(wc.run),
        threads=PLAN.threads_option("generate"),
        trust=PLAN.trust_option(),
    resources:
        **PLAN.resources("generate"),
    conda:
        GENERATION_ENV
    shell:
        "python -m lota.generate --model {input.model:q} --data {input.data:q} --out {output:q}"
        " --max-new-tokens {params.max_new_tokens} {params.options} {params.threads} {params.trust}"
        " > {log:q} 2>&1"


rule evaluate:
    input:
        samples=lambda wc: PLAN.scored_samples(wc.run),
        summary=lambda wc: PLAN.train_summary(wc.run),
        lr_choice=lambda wc: PLAN.lr_choices(wc.run),
    output:
        "results/{run}.json",
    log:
        "logs/evaluate/{run}.log",
    benchmark:
        "benchmarks/evaluate/{run}.tsv"
    params:
        task=lambda wc: PLAN.run(wc.run).task,
        method=lambda wc: PLAN.run(wc.run).method,
        shape=lambda wc: PLAN.run_shape_options(wc.run),
        summary=lambda wc, input: cli_options({"train_summary": input.summary}) if input.summary else "",
        lr_choice=lambda wc, input: cli_options({"lr_choice": input.lr_choice}) if input.lr_choice else "",
        benchmarks=lambda wc: PLAN.stage_benchmarks(wc.run),
        base_model=config["base_model"]["source"],
        config_json=lambda wc: PLAN.provenance(wc.run),
        scoring=lambda wc: PLAN.scoring_options([PLAN.run(wc.run).task]),
    resources:
        **PLAN.resources("light"),
    conda:
        ENV
    shell:
        "python -m lota.evaluate --samples {input.samples:q} --task {params.task} --out {output:q}"
        " --run {wildcards.run:q} --method {params.method} {params.shape} {params.summary} {params.lr_choice}"
        " --base-model {params.base_model:q} --config-json {params.config_json:q}"
        " --benchmark {params.benchmarks} {params.scoring} {resources.tracking} > {log:q} 2>&1"


# An exported model and its model card (README.md), as the hub would publish it; built when asked
# for (snakemake work/release/lota_gsm8k_s90), after the model is scored.
rule model_card:
    input:
        unpack(lambda wc: PLAN.released("run", wc.run)),
    output:
        directory("work/release/{run}"),
    log:
        "logs/model_card/{run}.log",
    benchmark:
        "benchmarks/model_card/{run}.tsv"
    params:
        kind="run",
        options=lambda wc: PLAN.model_card_options([PLAN.run(wc.run).task]),
    resources:
        **PLAN.resources("light"),
    conda:
        ENV
    shell:
        "python -m lota.model_card --model {input.model:q} --result {input.result:q} --kind {params.kind:q}"
        " --out {output:q} {params.options} > {log:q} 2>&1"


use rule model_card as model_card_sequence with:
    input:
        unpack(lambda wc: PLAN.released("sequence", wc.seq)),
    output:
        directory("work/release/cl/{seq}"),
    log:
        "logs/model_card/cl/{seq}.log",
    benchmark:
        "benchmarks/model_card/cl/{seq}.tsv"
    params:
        kind="sequence",
        options=lambda wc: PLAN.model_card_options(PLAN.sequence(wc.seq).tasks),


use rule model_card as model_card_merge with:
    input:
        unpack(lambda wc: PLAN.released("merge", wc.merge)),
    output:
        directory("work/release/merge/{merge}"),
    log:
        "logs/model_card/merge/{merge}.log",
    benchmark:
        "benchmarks/model_card/merge/{merge}.tsv"
    params:
        kind="merge",
        options=lambda wc: PLAN.model_card_options(PLAN.merge(wc.merge).tasks),
