"""Compare two output folders of .ci/behaviour/run.sh (OLD, NEW) and say whether they behave alike.

Checked: every file under results/ and work/ (prepared data, masks, task vectors, Fisher scores,
run weights, adapters and sparse deltas, training logs and summaries, exported and merged model
folders, samples, sequence and merge results, report.md) must be byte-identical, except:

- JSON and JSONL files: the values of VOLATILE keys (below) are masked in the raw text before the
  bytes are compared, so key order, formatting and every other value still count. Tokenizer files
  (tokenizer*.json) are compared unmasked.
- results/report.md: numbers with a unit of time or memory (e.g. "5 s", "0.3 hours", "564 MB") are masked; the
  raw lines that differ are listed as a note.
- PNG plots: compared, but a difference is only a note (matplotlib output is not part of the check).

A file present in one folder and not the other is a difference. logs/, benchmarks/ and .snakemake/
are not compared (timings and Snakemake metadata only). Exit status: 0 when alike, 1 otherwise.

Usage: python .ci/behaviour/compare.py OLD NEW
"""

from __future__ import annotations

import json
import re
import struct
import sys
from pathlib import Path

# Keys whose values are measurements of the machine, not results of the code: wall times of
# stages, steps, training loops and checkpoints (Snakemake benchmarks feed `stages.*.wall_s`);
# throughput; peak memory (torch's and the process RSS, incl. benchmarks' max_rss_mb).
VOLATILE = ("wall_s", "train_wall_s", "step_s", "checkpoint_s", "tokens_per_s")
VOLATILE += ("peak_memory_mb", "max_rss_mb", "peak_rss_mb")
VOLATILE_VALUE = re.compile(rf'("(?:{"|".join(VOLATILE)})"\s*:\s*)(-?[0-9][0-9.eE+-]*|null|NaN|-?Infinity)')
REPORT_MEASURE = re.compile(r"\b\d+(?:\.\d+)?\s?(?:ms|s|min|h|hours|kB|MB|GB|MiB|GiB)\b")
TREES = ("results", "work")


def files(root: Path) -> set[str]:
    paths = (path for tree in TREES for path in (root / tree).rglob("*"))
    return {str(path.relative_to(root)) for path in paths if path.is_file()}


def masked(path: str, data: bytes) -> bytes:
    name = Path(path).name
    if name.endswith((".json", ".jsonl")) and not name.startswith("tokenizer"):
        return VOLATILE_VALUE.sub(r'\1"*"', data.decode()).encode()
    if path == "results/report.md":
        return REPORT_MEASURE.sub("*", data.decode()).encode()
    return data


def first_text_difference(old: bytes, new: bytes) -> str:
    a, b = old.decode(errors="replace").splitlines(), new.decode(errors="replace").splitlines()
    for number, (x, y) in enumerate(zip(a, b, strict=False), 1):
        if x != y:
            column = next((i for i, (c, d) in enumerate(zip(x, y, strict=False)) if c != d), min(len(x), len(y)))
            start = max(column - 60, 0)
            return f"line {number}, column {column + 1}: {x[start : column + 60]!r} != {y[start : column + 60]!r}"
    return f"{len(a)} lines != {len(b)} lines"


def safetensors_difference(old: bytes, new: bytes) -> str:
    def split(data):
        size = struct.unpack("<Q", data[:8])[0]
        header = json.loads(data[8 : 8 + size])
        return header, data[8 + size :]

    (ha, da), (hb, db) = split(old), split(new)
    if ha.get("__metadata__") != hb.get("__metadata__"):
        return f"metadata {ha.get('__metadata__')} != {hb.get('__metadata__')}"
    if ha.keys() != hb.keys():
        return f"tensors only in one: {sorted(ha.keys() ^ hb.keys())[:5]}"
    changed = [
        name
        for name in ha
        if name != "__metadata__"
        and (ha[name] != hb[name] or da[slice(*ha[name]["data_offsets"])] != db[slice(*hb[name]["data_offsets"])])
    ]
    return f"{len(changed)} tensors differ, e.g. {changed[:5]}"


def describe(path: str, old: bytes, new: bytes) -> str:
    if path.endswith(".safetensors"):
        return safetensors_difference(old, new)
    try:
        return first_text_difference(old, new)
    except UnicodeDecodeError:
        return f"{len(old)} bytes != {len(new)} bytes"


def main(old_root: Path, new_root: Path) -> int:
    old_files, new_files = files(old_root), files(new_root)
    problems, notes, kinds = [], [], {}
    for path in sorted(old_files ^ new_files):
        problems.append(f"only in {'OLD' if path in old_files else 'NEW'}: {path}")
    for path in sorted(old_files & new_files):
        kind = Path(path).suffix or Path(path).name
        kinds[kind] = kinds.get(kind, 0) + 1
        old, new = (old_root / path).read_bytes(), (new_root / path).read_bytes()
        if old == new:
            continue
        if path.endswith(".png"):
            notes.append(f"plot differs (not checked): {path}")
        elif masked(path, old) == masked(path, new):
            if path == "results/report.md":
                pairs = zip(old.decode().splitlines(), new.decode().splitlines(), strict=True)
                lines = [number for number, (x, y) in enumerate(pairs, 1) if x != y]
                notes.append(f"report.md: lines {lines} differ only in times and memory")
        else:
            problems.append(f"differs: {path}: {describe(path, masked(path, old), masked(path, new))}")
    print(f"compared {len(old_files & new_files)} files: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))
    print(f"ignored JSON keys: {', '.join(VOLATILE)}")
    for note in notes:
        print(f"note: {note}")
    for problem in problems:
        print(f"DIFFERENCE: {problem}")
    verdict = "SAME BEHAVIOUR" if not problems else f"DIFFERENT: {len(problems)} differences"
    print(f"verdict: {verdict} ({old_root} vs {new_root})")
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
