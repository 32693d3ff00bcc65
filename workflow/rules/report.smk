# The sweep's results -> results/report.md with a table and an accuracy-vs-sparsity plot per task.


rule report:
    input:
        sweep_results,
    output:
        table=report("results/report.md", category="Sweep", caption="../report/table.rst"),
        plots=report(
            expand("results/plots/{task}.png", task=config["sweep"]["tasks"]),
            category="Sweep",
            caption="../report/accuracy.rst",
        ),
    log:
        "logs/report.log",
    benchmark:
        "benchmarks/report.tsv"
    params:
        plots=lambda wc, output: os.path.dirname(output.plots[0]),
    resources:
        **resources("light"),
    conda:
        ENV
    shell:
        "python -m lota.report --results {input:q} --out {output.table:q} --plots {params.plots:q} > {log:q} 2>&1"
