# Merging: results/merge/<method>_<A>+<B>[+...][_s<percent>][_l<lambda>].json. The tasks' single-task
# runs (fft_<task>, or lota_<task>_s<percent> for lotasum) are merged onto the base model one tensor
# at a time, the merged model is scored on every task it merges, beside the runs it came from.


rule merge_models:
    input:
        base=BASE_MODEL,
        runs=lambda wc: PLAN.merge_runs(wc.merge),
    output:
        directory("work/merge/models/{merge}"),
    log:
        "logs/merge/{merge}.log",
    benchmark:
        "benchmarks/merge/{merge}.tsv"
    params:
        options=lambda wc: PLAN.merge_options(wc.merge),
    resources:
        **PLAN.resources("light"),
    conda:
        ENV
    shell:
        "python -m lota.merge --base {input.base:q} --runs {input.runs:q} --out {output:q} {params.options}"
        " > {log:q} 2>&1"


use rule generate as generate_merged with:
    input:
        model="work/merge/models/{merge}",
        data="work/data/{task}/eval.jsonl",
    output:
        "work/merge/samples/{merge}/{task}.jsonl",
    log:
        "logs/merge/generate/{merge}/{task}.log",
    benchmark:
        "benchmarks/merge/generate/{merge}/{task}.tsv"
    params:
        max_new_tokens=lambda wc: PLAN.task_setting(PLAN.check_task(wc.task), "max_new_tokens"),
        options=lambda wc: PLAN.generate_options(wc.merge),


rule evaluate_merge:
    input:
        samples=lambda wc: list(PLAN.merge_samples(wc.merge).values()),
        model="work/merge/models/{merge}",
        single_task=lambda wc: [f"results/{run}.json" for run in PLAN.merge(wc.merge).runs],
        base_results=lambda wc: PLAN.merge_base_results(wc.merge),
    output:
        "results/merge/{merge}.json",
    log:
        "logs/merge/evaluate/{merge}.log",
    benchmark:
        "benchmarks/merge/evaluate/{merge}.tsv"
    params:
        samples=lambda wc: key_paths(PLAN.merge_samples(wc.merge)),
        method=lambda wc: PLAN.merge(wc.merge).method,
        base_model=config["base_model"]["source"],
        config_json=lambda wc: PLAN.merge_provenance(wc.merge),
        scoring=lambda wc: PLAN.scoring_options(PLAN.merge(wc.merge).tasks),
    resources:
        **PLAN.resources("light"),
    conda:
        ENV
    shell:
        "python -m lota.evaluate_merge --out {output:q} --run {wildcards.merge:q} --method {params.method}"
        " --samples {params.samples} --merge-summary {input.model:q}/merge.json"
        " --single-task {input.single_task:q} --base-results {input.base_results:q}"
        " --base-model {params.base_model:q} --config-json {params.config_json:q}"
        " --benchmark merge=benchmarks/merge/{wildcards.merge:q}.tsv {params.scoring}"
        " {resources.tracking} > {log:q} 2>&1"
