"""The package's layers, checked over its import graph (grimp, imports inside functions included).

A stage is a module run as `python -m lota.X`: one with `if __name__ == "__main__"`; every other
module is the library, in the packages of PACKAGE_ORDER. Stages sit at the top (lota/<stage>.py)
and import the library; no module imports a stage; each library package imports only the packages
before it in PACKAGE_ORDER; no lota module imports itself back through others. Within
lota.training each part imports only the parts before it in TRAINING_ORDER.
"""

import importlib.util
from pathlib import Path

import grimp
import pytest

# The library, lowest layer first (docs/development.md: Where to make a change).
PACKAGE_ORDER = ["core", "tasks", "pipeline", "deltas", "training", "evaluation", "analysis"]
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


def test_the_top_level_holds_the_stages_and_the_library_packages(graph, stages):
    top = {module.removeprefix("lota.") for module in graph.modules if module.count(".") == 1}
    assert top - set(PACKAGE_ORDER) == {stage.removeprefix("lota.") for stage in stages}
    assert set(PACKAGE_ORDER) <= top


def test_each_library_package_imports_only_the_packages_before_it(graph):
    def package(module: str) -> str:
        return module.split(".")[1]

    wrong = [
        f"{importer} imports {imported}"
        for position, name in enumerate(PACKAGE_ORDER)
        for importer in sorted(m for m in graph.modules if m.startswith(f"lota.{name}"))
        for imported in sorted(graph.find_modules_directly_imported_by(importer))
        if imported != "lota" and package(imported) in PACKAGE_ORDER[position + 1 :]
    ]
    assert not wrong, "\n".join(wrong)


def test_no_module_imports_a_stage(graph, stages):
    """Stages are thin command lines over the library: what two stages share lives in the library."""
    wrong = [
        f"{importer} imports {imported}"
        for importer in sorted(graph.modules)
        for imported in sorted(graph.find_modules_directly_imported_by(importer) & stages)
    ]
    assert not wrong, "a module imports a stage:\n" + "\n".join(wrong)


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
