"""The import graph of marco_eval/: no circles, and lm-eval only where it belongs.

Every import counts, module level, inside functions and under `if TYPE_CHECKING:` alike: a
lazy import still makes the two modules depend on each other, it only hides it until run
time, and a type-only import is a dependency a reader must follow all the same."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "marco_eval"
# The adapter builds the lm-eval model; the hook patches lm-eval at start-up and runs its CLI.
MAY_IMPORT_LM_EVAL = {"marco_eval.lm", "marco_eval._hook"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path, known: dict[str, Path]) -> set[str]:
    """Every module a file imports (`from pkg import mod` counts as pkg.mod
    when it is one)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{alias.name}" for alias in node.names if f"{node.module}.{alias.name}" in known}
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: {m for m in imports_of(path, known) if m in known and m != name} for name, path in known.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_circles_in_marco_eval():
    edges = graph()
    # A package's __init__ re-exporting its own submodules is how packages work, not a circle.
    for name in edges:
        edges[name] = {m for m in edges[name] if not m.startswith(name + ".")}
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges))


def test_only_the_adapter_and_the_hook_import_lm_eval():
    known = modules()
    offenders = sorted(name for name, path in known.items() if name not in MAY_IMPORT_LM_EVAL
                       and any(m == "lm_eval" or m.startswith("lm_eval.") for m in imports_of(path, known)))
    assert offenders == []


def test_the_search_imports_no_backend_torch_or_lm_eval():
    known = modules()
    for name, path in known.items():
        if name.startswith("marco_eval.search"):
            bad = {m for m in imports_of(path, known) if m.split(".")[0] in ("torch", "lm_eval", "transformers")
                   or m.startswith(("marco_eval.backends", "marco_eval.engine", "marco_eval.lm"))}
            assert not bad, f"{name} imports {sorted(bad)}"


def test_backends_answer_requests_and_never_run_searches():
    """Scheduling searches is the engine's job (engine.py, data_parallel.py): a backend takes
    the policy protocols from the search package, never Search itself or the driver."""
    known = modules()
    for name, path in known.items():
        if name.startswith("marco_eval.backends"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            names = {(node.module, alias.name) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                     for alias in node.names}
            bad = {f"{m}.{n}" for m, n in names if m and m.startswith("marco_eval.search")
                   and (n in ("Search", "run_searches", "drive") or m in ("marco_eval.search.mcts",
                                                                         "marco_eval.search.driver"))}
            assert not bad, f"{name} imports {sorted(bad)}"


def test_the_report_and_the_viewer_are_leaves():
    """They read what runs wrote: nothing that runs a search imports them, so no search, backend
    or engine change waits on a table or a page; and only the command line imports the viewer."""
    known = modules()
    running = ("marco_eval.search", "marco_eval.backends", "marco_eval.engine", "marco_eval.lm",
               "marco_eval.data_parallel")
    for leaf in ("marco_eval.report", "marco_eval.view"):
        importers = sorted(name for name, path in known.items() if not name.startswith(leaf)
                           and any(m == leaf or m.startswith(leaf + ".") for m in imports_of(path, known)))
        bad = [name for name in importers if name.startswith(running)]
        assert bad == [], f"{leaf} is imported by {bad}"
        if leaf == "marco_eval.view":
            assert importers == ["marco_eval.cli"]
