"""The package's shape stays as the README draws it: no import circle between modules, and each
package imports only the packages below it (imports under ``TYPE_CHECKING`` excepted: they run
only in a type checker)."""

from __future__ import annotations

import ast
from pathlib import Path

import mona_tune

PACKAGE = Path(mona_tune.__file__).parent
BASE = {"(root)", "errors", "paths", "cache", "ray_compat", "workers", "extras"}  # leaves every package may use
# package -> the packages it may import (beside BASE)
ALLOWED = {
    "config": set(),
    "tasks": {"config"},
    "models": {"config"},
    "train": {"config", "tasks", "models"},
    "tracking": {"config", "tasks"},
    "cluster": {"config", "tasks", "models", "train", "tracking"},
    "report": {"config", "tracking", "search"},  # search: the results' types only (checked below)
    "search": {"config", "tasks", "models", "train", "tracking", "cluster", "report"},
    "cli": {"config", "tasks", "models", "train", "tracking", "cluster", "report", "search"},
}


# the calls that write to a tracking store (tracking.mlflow_runs' and MLflow's own)
WRITES = {"set_tags", "set_tag", "set_experiment_tag", "store_shared_view", "log_metrics",
          "log_metric", "log_artifact", "log_batch", "log_param", "log_params",
          "register_embedder", "end_run", "start_parent_run", "reopen_run", "delete_run",
          "create_run", "set_terminated", "create_registered_model", "set_registered_model_alias"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts).removesuffix(".__init__")


def _imports(path: Path, modules) -> set[str]:
    """The mona_tune modules ``path`` imports at run time (at module level or in a function);
    ``from pkg import mod`` is an import of ``mod`` (Python runs ``pkg/__init__`` first whatever
    imports a submodule; a registry's __init__ importing its entries is no circle)."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mona_tune"):
            subs = {f"{node.module}.{a.name}" for a in node.names} & set(modules)
            out.update(subs)
            if len(subs) < len(node.names):  # names defined in node.module itself
                out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("mona_tune"))
    return out


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {m: {d for d in _imports(p, modules) if d in modules and d != m}
            for m, p in modules.items()}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "(root)"


def test_no_import_circle():
    graph = _graph()
    state: dict[str, int] = {}
    circles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                circles.append(path[path.index(d):] + [d] if d in path else [m, d])
            elif d not in state:
                visit(d, [*path, d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert circles == [], circles


def test_each_package_imports_only_what_lies_below_it():
    wrong = []
    for m, deps in sorted(_graph().items()):
        pkg = _package(m)
        for d in sorted(deps):
            target = _package(d)
            if target == pkg or target in BASE or pkg in BASE and target in BASE:
                continue
            if target not in ALLOWED.get(pkg, set()):
                wrong.append(f"{m} -> {d}")
    assert wrong == [], wrong


def test_the_report_reads_results_and_never_runs_a_search():
    """report may name search.results' types (under TYPE_CHECKING), and imports nothing of the
    search at run time; it writes nothing to the tracking store (no set_tag, log_* or
    register_* call)."""
    graph = _graph()
    for m in (m for m in graph if _package(m) == "report"):
        assert not [d for d in graph[m] if _package(d) == "search"], m
    for path in (PACKAGE / "report").glob("*.py"):
        calls = {ast.unparse(n.func) for n in ast.walk(ast.parse(path.read_text()))
                 if isinstance(n, ast.Call)}
        writes = [c for c in calls if c.rsplit(".", 1)[-1] in WRITES]
        assert writes == [], (path.name, writes)
