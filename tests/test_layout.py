"""The package's imports go one way: the model imports no stage; stages import neither the
pipeline nor the CLI, and of another stage only what it publishes (its package, ``contract``,
``stage``); nothing imports in a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "mdeberta"
STAGES = ("corpora", "tokenizer", "pretrain", "xnli")
TOP = ("pipeline", "cli")
PUBLISHED = ("contract", "stage")  # a stage's modules that other stages may read


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The mdeberta modules ``path`` imports, relative imports resolved, at any depth of the file."""
    package = module_name(path).split(".") if path.name == "__init__.py" else module_name(path).split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found |= {f"{target}.{alias.name}" if f"{target}.{alias.name}" in MODULES else target
                      for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name.startswith("mdeberta")}


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}
GRAPH = {name: imports(path) for name, path in MODULES.items()}


def part(module: str) -> str:
    """The package part a module belongs to: a stage, ``model``, or a top-level module's name."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "mdeberta"


def test_the_model_imports_no_stage_and_stages_neither_pipeline_nor_cli():
    wrong = []
    for module, targets in GRAPH.items():
        forbidden = (*STAGES, *TOP) if part(module) == "model" else TOP if part(module) in STAGES else ()
        wrong += [f"{module} -> {target}" for target in targets if part(target) in forbidden]
    assert not wrong


def test_a_stage_reads_only_what_another_stage_publishes():
    wrong = []
    for module, targets in GRAPH.items():
        for target in targets:
            if part(module) in STAGES and part(target) in STAGES and part(target) != part(module):
                inner = target.split(".")[2:]
                if inner and inner[0] not in PUBLISHED:
                    wrong.append(f"{module} -> {target}")
    assert not wrong


def test_no_import_cycle():
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = "open"
        for target in sorted(GRAPH.get(module, ())):
            target = target if target in GRAPH else target.rsplit(".", 1)[0]
            if target == module or target not in GRAPH:
                continue
            if state.get(target) == "open":
                return [*path, module, target]
            if target not in state and (cycle := visit(target, [*path, module])):
                return cycle
        state[module] = "done"
        return None

    for module in sorted(GRAPH):
        if module not in state:
            cycle = visit(module, [])
            assert cycle is None, " -> ".join(cycle)


def test_the_pipeline_reaches_each_stage_through_its_stage_module():
    reached = {target.split(".")[2] for target in GRAPH["mdeberta.pipeline"] if part(target) in STAGES}
    assert reached <= {"stage", "ablation"}  # the ablation report compares the pretraining runs
