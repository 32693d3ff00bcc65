# Task sequences (continual learning): results/cl/<method>_<A>-<B>[-...][_s<percent>|_r<rank>].json.
# Stage 1 is the single-task run (fft_A, lora_A, lota_A_sNN); stage k trains the last task from the
# model after stage k-1 and is exported onto it. A LoTA method's stage-k mask comes from a
# calibration run from that model: a dense one (lota: any entries; lotto: only entries no earlier
# mask made trainable), or, for lottoflip, one that trains only those entries (the official
# code's flipped mask). Every stage's model is scored on every task of the sequence.


rule complement_mask:
    input:
        lambda wc: PLAN.stage_masks(wc.model),
    output:
        "work/cl/complement_masks/{model}.safetensors",
    log:
        "logs/cl/complement_mask/{model}.log",
    benchmark:
        "benchmarks/cl/complement_mask/{model}.tsv"
    resources:
        **PLAN.resources("light"),
    conda:
        ENV
    shell:
        "python -m lota.complement_mask --masks {input:q} --out {output:q} > {log:q} 2>&1"


use rule train_dense as train_stage with:
    input:
        unpack(lambda wc: PLAN.sequence_stage_inputs(wc.seq)),
    output:
        weights="work/cl/runs/{seq}/weights.safetensors",
        summary="work/cl/runs/{seq}/summary.json",
        steps="work/cl/runs/{seq}/log.jsonl",
    log:
        "logs/cl/train/{seq}.log",
    benchmark:
        "benchmarks/cl/train/{seq}.tsv"
    params:
        method=lambda wc: PLAN.sequence(wc.seq).training_method,
        options=lambda wc: PLAN.sequence_stage_options(wc.seq),


use rule train_dense as calibrate_stage with:
    input:
        unpack(lambda wc: PLAN.calibration_inputs(wc.kind, wc.model, wc.task)),
    output:
        weights="work/cl/calibration/{kind}/{model}/{task}/weights.safetensors",
        summary="work/cl/calibration/{kind}/{model}/{task}/summary.json",
        steps="work/cl/calibration/{kind}/{model}/{task}/log.jsonl",
    log:
        "logs/cl/calibration/{kind}/{model}/{task}.log",
    benchmark:
        "benchmarks/cl/calibration/{kind}/{model}/{task}.tsv"
    params:
        method=lambda wc: names.calibration_method(wc.kind),
        options=lambda wc: PLAN.calibration_options(wc.kind, wc.model, wc.task),


use rule task_vector as stage_task_vector with:
    input:
        base=lambda wc: model_path(wc.model),
        finetuned="work/cl/calibration/{kind}/{model}/{task}/weights.safetensors",
    output:
        "work/cl/task_vectors/{kind}/{model}/{task}.safetensors",
    log:
        "logs/cl/task_vector/{kind}/{model}/{task}.log",
    benchmark:
        "benchmarks/cl/task_vector/{kind}/{model}/{task}.tsv"


use rule extract_mask as stage_mask with:
    input:
        unpack(lambda wc: PLAN.sequence_mask_inputs(wc.seq)),
    output:
        "work/cl/masks/{seq}.safetensors",
    log:
        "logs/cl/extract_mask/{seq}.log",
    benchmark:
        "benchmarks/cl/extract_mask/{seq}.tsv"
    params:
        sparsity=lambda wc: PLAN.sequence(wc.seq).sparsity,
        exclude=lambda wc, input: cli_options({"exclude": list(input.exclude)}) if input.exclude else "",


use rule export as export_stage with:
    input:
        base=lambda wc: model_path(PLAN.sequence(wc.seq).stage_models[-2]),
        weights="work/cl/runs/{seq}/weights.safetensors",
    output:
        directory("work/cl/models/{seq}"),
    log:
        "logs/cl/export/{seq}.log",
    benchmark:
        "benchmarks/cl/export/{seq}.tsv"


use rule generate as generate_on with:
    input:
        model=lambda wc: model_path(wc.model),
        data="work/data/{task}/eval.jsonl",
    output:
        "work/cl/samples/{model}/{task}.jsonl",
    log:
        "logs/cl/generate/{model}/{task}.log",
    benchmark:
        "benchmarks/cl/generate/{model}/{task}.tsv"
    params:
        max_new_tokens=lambda wc: PLAN.task_setting(PLAN.check_task(wc.task), "max_new_tokens"),
        options=lambda wc: PLAN.generate_options(wc.model),


rule evaluate_sequence:
    input:
        samples=lambda wc: list(PLAN.sequence_samples(wc.seq).values()),
        summaries=lambda wc: PLAN.sequence_summaries(wc.seq),
        masks=lambda wc: PLAN.sequence_masks(wc.seq),
    output:
        "results/cl/{seq}.json",
    log:
        "logs/cl/evaluate/{seq}.log",
    benchmark:
        "benchmarks/cl/evaluate/{seq}.tsv"
    params:
        tasks=lambda wc: " ".join(PLAN.sequence(wc.seq).tasks),
        samples=lambda wc: key_paths(PLAN.sequence_samples(wc.seq)),
        method=lambda wc: PLAN.sequence(wc.seq).method,
        shape=lambda wc: shape_options(PLAN.sequence(wc.seq).sparsity, PLAN.sequence(wc.seq).rank),
        base_model=config["base_model"]["source"],
        config_json=lambda wc: PLAN.sequence_provenance(wc.seq),
        benchmarks=lambda wc: PLAN.sequence_benchmarks(wc.seq),
        scoring=lambda wc: PLAN.scoring_options(PLAN.sequence(wc.seq).tasks),
    resources:
        **PLAN.resources("light"),
    conda:
        ENV
    shell:
        "python -m lota.continual --out {output:q} --run {wildcards.seq:q} --method {params.method}"
        " --tasks {params.tasks} --samples {params.samples} --train-summary {input.summaries:q}"
        " --mask {input.masks:q} {params.shape} --base-model {params.base_model:q}"
        " --config-json {params.config_json:q} --benchmark {params.benchmarks} {params.scoring}"
        " {resources.tracking} > {log:q} 2>&1"
