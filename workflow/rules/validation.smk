# Learning rates chosen on the validation split: where train.<method>.lr lists rates, the base seed's
# run is trained at each (work/lr_search/runs/<run>/lr<rate>), scored on work/data/<task>/valid.jsonl,
# and results/lr/<run>.json records the rate of the highest validation accuracy; the run itself, every
# seed of it, and (for fft) the dense calibration run then train at that rate.


use rule train_dense as train_candidate with:
    input:
        unpack(lambda wc: PLAN.candidate_inputs(wc.run)),
        model_scope=model_scope_checked,
    output:
        weights="work/lr_search/runs/{run}/lr{lr}/weights.safetensors",
        summary="work/lr_search/runs/{run}/lr{lr}/summary.json",
        steps="work/lr_search/runs/{run}/lr{lr}/log.jsonl",
    log:
        "logs/lr_search/train/{run}/lr{lr}.log",
    benchmark:
        "benchmarks/lr_search/train/{run}/lr{lr}.tsv"
    wildcard_constraints:
        run=rf"(?!rosa_){names.RUN_PATTERN}",  # RoSA's candidates write an adapter too: train_rosa_candidate
    params:
        method=lambda wc: PLAN.run(wc.run).method,
        options=lambda wc: PLAN.candidate_options(wc.run, wc.lr),


use rule train_candidate as train_rosa_candidate with:
    output:
        weights="work/lr_search/runs/{run}/lr{lr}/weights.safetensors",
        adapter="work/lr_search/runs/{run}/lr{lr}/adapter.safetensors",
        summary="work/lr_search/runs/{run}/lr{lr}/summary.json",
        steps="work/lr_search/runs/{run}/lr{lr}/log.jsonl",
    wildcard_constraints:
        run=rf"rosa_{names.RUN_PATTERN}",


use rule export as export_candidate with:
    input:
        base=BASE_MODEL,
        weights=lambda wc: PLAN.candidate_weights(wc.run, wc.lr),
    output:
        directory("work/lr_search/models/{run}/lr{lr}"),
    log:
        "logs/lr_search/export/{run}/lr{lr}.log",
    benchmark:
        "benchmarks/lr_search/export/{run}/lr{lr}.tsv"


use rule generate as generate_candidate with:
    input:
        model="work/lr_search/models/{run}/lr{lr}",
        data=lambda wc: PLAN.valid_data(wc.run),
    output:
        "work/lr_search/samples/{run}/lr{lr}.jsonl",
    log:
        "logs/lr_search/generate/{run}/lr{lr}.log",
    benchmark:
        "benchmarks/lr_search/generate/{run}/lr{lr}.tsv"


use rule evaluate as evaluate_candidate with:
    input:
        samples="work/lr_search/samples/{run}/lr{lr}.jsonl",
        summary="work/lr_search/runs/{run}/lr{lr}/summary.json",
        lr_choice=[],
    output:
        "work/lr_search/results/{run}/lr{lr}.json",
    log:
        "logs/lr_search/evaluate/{run}/lr{lr}.log",
    benchmark:
        "benchmarks/lr_search/evaluate/{run}/lr{lr}.tsv"
    params:
        benchmarks=lambda wc: key_paths(PLAN.candidate_jobs(wc.run, wc.lr)),
        config_json=lambda wc: PLAN.candidate_provenance(wc.run, wc.lr),


rule select_lr:
    input:
        candidates=lambda wc: list(PLAN.lr_candidates(wc.run).values()),
    output:
        "results/lr/{run}.json",
    log:
        "logs/select_lr/{run}.log",
    benchmark:
        "benchmarks/select_lr/{run}.tsv"
    params:
        candidates=lambda wc: key_paths(PLAN.lr_candidates(wc.run)),
    resources:
        **PLAN.resources("light"),
    conda:
        ENV
    shell:
        "python -m lota.select_lr --run {wildcards.run:q} --candidates {params.candidates} --out {output:q}"
        " > {log:q} 2>&1"
