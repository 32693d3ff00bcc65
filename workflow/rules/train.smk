# Dense calibration run -> task vector -> mask -> sparse adaptation from the base weights;
# and the LoRA baseline, adapters trained on the frozen base.
# One dense run and one task vector per task serve every sparsity. The dense run is the FFT
# baseline (fft_<task>) unless train.calibration gives it another budget (calibration_<task>).


rule train_dense:
    input:
        model=BASE_MODEL,
        data="work/data/{task}/train.jsonl",
    output:
        weights="work/runs/{dense}_{task}/weights.safetensors",
        summary="work/runs/{dense}_{task}/summary.json",
        steps="work/runs/{dense}_{task}/log.jsonl",
    log:
        "logs/train/{dense}_{task}.log",
    benchmark:
        "benchmarks/train/{dense}_{task}.tsv"
    params:
        out=subpath(output.weights, parent=True),
        options=lambda wc: train_options(wc.dense, wc.task),
    resources:
        **resources("train"),
    conda:
        ENV
    shell:
        "python -m lota.train --processes {resources.processes} --checkpoint-every {resources.checkpoint_every}"
        " --method fft --model {input.model:q} --data {input.data:q}"
        " --out {params.out:q} {params.options} > {log:q} 2>&1"


rule task_vector:
    input:
        base=BASE_MODEL,
        finetuned=calibration_weights,
    output:
        "work/task_vectors/{task}.safetensors",
    log:
        "logs/task_vector/{task}.log",
    benchmark:
        "benchmarks/task_vector/{task}.tsv"
    resources:
        **resources("light"),
    conda:
        ENV
    shell:
        "python -m lota.task_vector --base {input.base:q} --finetuned {input.finetuned:q}"
        " --out {output:q} > {log:q} 2>&1"


rule extract_mask:
    input:
        task_vector="work/task_vectors/{task}.safetensors",
    output:
        "work/masks/{task}_s{percent}.safetensors",
    log:
        "logs/extract_mask/{task}_s{percent}.log",
    benchmark:
        "benchmarks/extract_mask/{task}_s{percent}.tsv"
    params:
        sparsity=lambda wc: percent_to_sparsity(wc.percent),
        options=cli_options(config["mask"]),
        exclude="",
    resources:
        **resources("light"),
    conda:
        ENV
    shell:
        "python -m lota.extract_mask --task-vector {input.task_vector:q} --out {output:q}"
        " --sparsity {params.sparsity} {params.options} {params.exclude} > {log:q} 2>&1"


rule train_lota:
    input:
        model=BASE_MODEL,
        data="work/data/{task}/train.jsonl",
        mask="work/masks/{task}_s{percent}.safetensors",
    output:
        weights="work/runs/lota_{task}_s{percent}/weights.safetensors",
        summary="work/runs/lota_{task}_s{percent}/summary.json",
        steps="work/runs/lota_{task}_s{percent}/log.jsonl",
    log:
        "logs/train/lota_{task}_s{percent}.log",
    benchmark:
        "benchmarks/train/lota_{task}_s{percent}.tsv"
    params:
        out=subpath(output.weights, parent=True),
        options=lambda wc: train_options("lota", wc.task),
    resources:
        **resources("train"),
    conda:
        ENV
    shell:
        "python -m lota.train --processes {resources.processes} --checkpoint-every {resources.checkpoint_every}"
        " --method lota --mask {input.mask:q} --model {input.model:q} --data {input.data:q}"
        " --out {params.out:q} {params.options} > {log:q} 2>&1"


rule train_lora:
    input:
        model=BASE_MODEL,
        data=lora_data,
    output:
        weights="work/runs/{lora_run}/weights.safetensors",
        summary="work/runs/{lora_run}/summary.json",
        steps="work/runs/{lora_run}/log.jsonl",
    log:
        "logs/train/{lora_run}.log",
    benchmark:
        "benchmarks/train/{lora_run}.tsv"
    params:
        out=subpath(output.weights, parent=True),
        options=lora_options,
    resources:
        **resources("train"),
    conda:
        ENV
    shell:
        "python -m lota.train --processes {resources.processes} --checkpoint-every {resources.checkpoint_every}"
        " --method lora --model {input.model:q} --data {input.data:q}"
        " --out {params.out:q} {params.options} > {log:q} 2>&1"
