"""lota: Lottery Ticket Adaptation experiments as a reproducible pipeline.

Each stage of the pipeline is one module with a pure function at its heart and a small CLI
(`python -m lota.<stage> --help`); the Snakemake workflow only wires them together.
"""

__version__ = "0.1.0"
