"""The package's imports follow docs/architecture.md: each module imports only from its own
layer or those below it (function-local imports included), the serving room imports nothing
of tfllm's but itself and the chat-template renderer, only the CLI imports the commands, and
the trainer calls the task contract without probing for it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "tfllm"
DOC = ROOT / "docs" / "architecture.md"


def layer_table() -> list[tuple[int, list[str]]]:
    """`(layer number, module prefixes)` rows of the layer table in docs/architecture.md."""
    rows = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\|\s*(\d+)\s*\|[^|]*\|([^|]*)\|", line)
        if m:
            modules = re.findall(r"`(tfllm[\w.]*)`", m.group(2))
            rows.append((int(m.group(1)), modules))
    return rows


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def imports(path: Path) -> list[tuple[int, str]]:
    """`(line, module)` of every tfllm import in the file, at any depth (`from tfllm import x`
    names module `tfllm.x` when x is a module)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "tfllm"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "tfllm":
                continue
            for a in node.names:
                full = f"{node.module}.{a.name}"
                found.append((node.lineno, full if is_module(full) else node.module))
    return found


def layer_of(module: str, table: list[tuple[int, list[str]]]) -> int | None:
    """The layer of the longest table prefix that `module` falls under."""
    best, best_len = None, -1
    for number, prefixes in table:
        for prefix in prefixes:
            exact = prefix == "tfllm"  # the package root itself, not everything under it
            if (module == prefix) or (not exact and module.startswith(prefix + ".")):
                if len(prefix) > best_len:
                    best, best_len = number, len(prefix)
    return best


def test_the_layer_table_covers_every_module():
    table = layer_table()
    assert len(table) >= 8, "docs/architecture.md lost its layer table"
    missing = [
        module_name(p) for p in PACKAGE.rglob("*.py") if layer_of(module_name(p), table) is None
    ]
    assert not missing, f"modules in no layer of docs/architecture.md: {missing}"


def test_no_import_climbs_a_layer():
    table = layer_table()
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = module_name(path)
        mine = layer_of(here, table)
        for line, target in imports(path):
            theirs = layer_of(target, table)
            if theirs is not None and mine is not None and theirs > mine:
                violations.append(f"{here}:{line} imports {target} (layer {mine} -> {theirs})")
    assert not violations, "imports that climb a layer:\n" + "\n".join(violations)


def test_the_serving_room_is_sealed():
    leaks = [
        f"{module_name(p)}:{line} imports {target}"
        for p in (PACKAGE / "serving").rglob("*.py")
        for line, target in imports(p)
        if not target.startswith("tfllm.serving") and target != "tfllm.chat_template"
    ]
    assert not leaks, leaks


def test_only_the_cli_imports_the_commands():
    offenders = [
        f"{module_name(p)}:{line}"
        for p in PACKAGE.rglob("*.py")
        if not module_name(p).startswith(("tfllm.commands", "tfllm.cli"))
        for line, target in imports(p)
        if target.startswith("tfllm.commands")
    ]
    assert not offenders, offenders


def test_no_import_cycle_through_module_level_imports():
    """Module-level imports form no cycle (function-local ones are for start-up time)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        targets = set()
        for node in tree.body:  # module level only
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.startswith("tfllm"):
                    for a in node.names:
                        full = f"{node.module}.{a.name}"
                        targets.add(full if is_module(full) else node.module)
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.startswith("tfllm")}
        graph[module_name(path)] = targets
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and nxt in graph:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            assert cycle is None, " -> ".join(cycle)


TASK_HOOKS = (
    "on_initialized",
    "prepare_batch",
    "updates_per_batch",
    "step_statistics",
    "loss_normalizer",
    "update_statistics",
    "eval_statistics",
    "summarize_eval",
    "loss_terms",
)


def test_the_trainer_does_not_probe_task_hooks():
    probes = []
    for path in (PACKAGE / "training").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("hasattr", "getattr")
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and node.args[1].value in TASK_HOOKS
            ):
                probes.append(
                    f"{module_name(path)}:{node.lineno} {node.func.id}({node.args[1].value!r})"
                )
    assert not probes, probes


def test_the_task_base_declares_every_hook():
    from tfllm.tasks.base import TaskModel

    missing = [hook for hook in TASK_HOOKS if not hasattr(TaskModel, hook)]
    assert not missing, missing
