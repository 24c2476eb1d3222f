"""No import cycle in tsrmon (issue 19).

An AST walk over ``tsrmon/``: every import a module makes when it is loaded
(module level, including ``try``/``if`` blocks, not inside functions) is an
edge, to the module and to each package ``__init__`` above it that Python
runs first.  A module's own packages are left out: they are loading or
loaded whenever it runs (a package importing its own modules is no cycle).
A cycle among these makes the first module's import order decide whether a
name exists yet; the configuration used to be one (config <-> alarms.rules).
"""

import ast
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE = os.path.join(ROOT, "tsrmon")


def _modules():
    out = {}
    for folder, dirs, files in os.walk(PACKAGE):
        dirs[:] = [d for d in dirs if d not in ("__pycache__", "static", "node_modules")]
        for name in files:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, name), ROOT)[:-3].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                out[".".join(rel)] = os.path.join(folder, name)
    return out


def _every_import(tree):
    """Every import statement, also those inside functions (run later)."""
    return (n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)))


def _load_time_imports(tree):
    """Import statements run at load: not inside a def or a class body's def."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        else:
            todo.extend(ast.iter_child_nodes(node))


def _with_parents(name, modules):
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in modules]


def import_graph(imports=_load_time_imports):
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
        own = set(_with_parents(package, modules))
        edges = set()
        for node in imports(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            for target in targets:
                edges.update(_with_parents(target, modules))
        graph[name] = edges - own - {name}
    return graph


def find_cycle(graph):
    """One cycle as a list of modules, or None (iterative DFS)."""
    state = {}
    for start in sorted(graph):
        if state.get(start):
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(graph.get(child, ())))))
    return None


def test_the_walk_sees_the_configuration_edges():
    graph = import_graph()
    assert "tsrmon.config.checks" in graph["tsrmon.alarms.settings"]
    assert "tsrmon.alarms.settings" in graph["tsrmon.config.model"]
    # Importing tsrmon.config.checks runs tsrmon/config/__init__.py first.
    assert "tsrmon.config" in graph["tsrmon.alarms.settings"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle_in_tsrmon():
    assert find_cycle(import_graph()) is None


def test_no_cycle_hidden_in_a_function_level_import():
    """An import inside a function only defers a cycle (config validation
    used to import the alarm rules that imported config)."""
    assert find_cycle(import_graph(_every_import)) is None


def test_configuration_package_init_imports_nothing():
    """Room settings import tsrmon.config.checks; if tsrmon/config/__init__
    imported the loader, that would be a cycle through every room."""
    with open(os.path.join(PACKAGE, "config", "__init__.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    imported = [n for n in _load_time_imports(tree) if isinstance(n, ast.ImportFrom) or
                any(a.name.startswith("tsrmon") for a in n.names)]
    assert imported == []


def test_each_settings_module_imports_first_in_a_fresh_interpreter():
    """Whatever is imported first, the configuration loads (no partially
    initialised module on the way)."""
    firsts = ["tsrmon.alarms.rules", "tsrmon.notify.settings", "tsrmon.spectra.settings", "tsrmon.config.checks"]
    code = ("import importlib, sys\n"
            "importlib.import_module(sys.argv[1])\n"
            "from tsrmon.config import build_config, load_config, ConfigError, StrictLoader\n"
            "build_config({}, None, sys.argv[2])\n")
    # The interpreters are independent: started together, they take the time of one per core.
    procs = [(first, subprocess.Popen([sys.executable, "-c", code, first, ROOT], cwd=ROOT,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
             for first in firsts]
    try:
        for first, proc in procs:
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, (first, err[-2000:])
    finally:
        for _, proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
