"""The package's layers, checked over its import graph (grimp, imports inside functions included).

A stage is a module run as `python -m lota.X`: one with `if __name__ == "__main__"`; every other
module is the library. Stages may import the library; the library never imports a stage; no
lota module imports itself back through others. Within lota.training each part imports only the
parts before it in TRAINING_ORDER.
"""

import importlib.util
from pathlib import Path

import grimp
import pytest

# Stage -> stage imports that exist today: shared code still held by a stage. Each should move into
# the library; until then it is allowed here. An entry whose importer exists must still be in use.
ALLOWED = {
    # evaluate's scoring, provenance and cost helpers (package_versions, parse_config_json, ...)
    ("lota.alpaca_eval", "lota.evaluate"): "evaluate's helpers",
    ("lota.continual", "lota.evaluate"): "evaluate's helpers",
    ("lota.evaluate_merge", "lota.evaluate"): "evaluate's helpers",
    ("lota.lmeval", "lota.evaluate"): "evaluate's helpers",
    # generate's backend choice and generation
    ("lota.lmeval", "lota.generate"): "choose_backend",
    ("lota.preference_data", "lota.generate"): "GenerateArgs, generate_transformers",
    # prepare_data's data folder and seeded subsets
    ("lota.alpaca_eval", "lota.prepare_data"): "resolve_data_dir",
    ("lota.preference_data", "lota.prepare_data"): "seeded_subset",
    # lmeval_tasks' offline dataset table (the workflow reads it too)
    ("lota.lmeval", "lota.lmeval_tasks"): "builtin_definition, builtin_tasks",
    # the benchmark prepares its model as the base_model stage does
    ("lota.bench", "lota.base_model"): "prepare_base_model",
}

TRAINING_ORDER = [
    "lr_choice",
    "optim",
    "checkpoint",
    "args",
    "data",
    "losses",
    "dpo",
    "model",
    "trainable",
    "gradients",
    "weights",
    "loop",
]


def is_stage(module: str) -> bool:
    origin = importlib.util.find_spec(module).origin
    return 'if __name__ == "__main__"' in Path(origin).read_text()


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("lota")


@pytest.fixture(scope="module")
def stages(graph) -> set[str]:
    return {module for module in graph.modules if is_stage(module)}


def test_the_stages_are_found(stages):
    assert {"lota.train", "lota.fisher", "lota.extract_mask"} <= stages
    assert not any(stage.startswith("lota.training") for stage in stages)


def test_the_library_imports_no_stage_and_a_stage_only_the_stages_allowed(graph, stages):
    wrong = [
        f"{importer} imports {imported}"
        for importer in sorted(graph.modules)
        for imported in sorted(graph.find_modules_directly_imported_by(importer) & stages)
        if (importer, imported) not in ALLOWED
    ]
    assert not wrong, "the library imports no stage, a stage no other stage:\n" + "\n".join(wrong)


def test_every_allowed_stage_import_is_still_made(graph):
    stale = [
        pair
        for pair in ALLOWED
        if pair[0] in graph.modules and not graph.direct_import_exists(importer=pair[0], imported=pair[1])
    ]
    assert not stale, f"no longer imported, remove from ALLOWED: {stale}"


def test_no_import_cycles():
    """A package importing its own submodules (lota.tasks' registry loads its tasks on demand) is
    left out: a submodule always imports its package first, so that is how packages are built."""
    graph = grimp.build_graph("lota")
    for package in graph.modules:
        for imported in graph.find_modules_directly_imported_by(package):
            if imported.startswith(package + "."):
                graph.remove_import(importer=package, imported=imported)
    cycles = []
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            chain = graph.find_shortest_chain(importer=imported, imported=importer)
            if chain:
                cycles.append(" -> ".join((importer, *chain)))
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_each_training_part_imports_only_the_parts_before_it(graph):
    parts = [f"lota.training.{name}" for name in TRAINING_ORDER]
    assert {module for module in graph.modules if module.startswith("lota.training.")} == set(parts)
    wrong = [
        f"{part} imports {imported}"
        for position, part in enumerate(parts)
        for imported in sorted(graph.find_modules_directly_imported_by(part) & set(parts[position:]))
    ]
    assert not wrong, "\n".join(wrong)
