"""The architecture, checked from the source: packages form layers (pipeline at the bottom, then
tokenizer, then steps and eval, then experiments, then infra), no module imports one of a higher
layer, the modules' imports form no cycle, the project's own modules are imported at the top of each
file (only heavy third-party libraries are imported lazily), and the generic executor (pipeline/)
knows no SODA word."""

import ast
import os
import re
from collections import defaultdict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = {"pipeline": 0, "tokenizer": 1, "steps": 2, "eval": 2, "experiments": 3, "infra": 4}
# SODA's own words: none may appear in the generic executor's code
DOMAIN_WORDS = ("mimi", "speech", "whisper", "wavlm", "sblimp", "librispeech", "yodas", "emilia", "levanter",
                "qwen", "llama", "codec", "tts")


def own_modules() -> dict[str, str]:
    found = {}
    for package in LAYERS:
        for directory, _, files in os.walk(os.path.join(REPO, package)):
            if "__pycache__" in directory:
                continue
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(directory, name)
                    module = os.path.relpath(path, REPO)[: -len(".py")].replace(os.sep, ".")
                    found[module.removesuffix(".__init__")] = path
    return found


MODULES = own_modules()


def _resolve(name: str) -> str | None:
    """The own module an import names (a module, or a name inside one), or None for a third-party one."""
    while name:
        if name in MODULES:
            return name
        name = name.rsplit(".", 1)[0] if "." in name else ""
    return None


def imports_of(module: str) -> list[tuple[str, int, bool]]:
    """(imported own module, line, at the top of the file?) for each import in `module`'s source."""
    path = MODULES[module]
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    top = {id(node) for node in tree.body}
    for node in tree.body:  # `if TYPE_CHECKING:` / `try:` blocks at module level count as the top
        if isinstance(node, (ast.If, ast.Try)):
            top |= {id(n) for n in ast.walk(node)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
                for _ in range(node.level - 1):
                    package = package.rsplit(".", 1)[0]
                base = f"{package}.{node.module}" if node.module else package
            else:
                base = node.module or ""
            names = [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            target = _resolve(name)
            if target and target != module:
                out.append((target, node.lineno, id(node) in top))
    return out


GRAPH = {m: imports_of(m) for m in MODULES}


def _layer(module: str) -> int:
    return LAYERS[module.split(".")[0]]


def test_no_module_imports_from_a_higher_layer():
    upward = sorted({f"{m}:{line} imports {target}" for m, edges in GRAPH.items() for target, line, _ in edges
                     if _layer(target) > _layer(m)})
    assert not upward, "imports against the layers (pipeline < tokenizer < steps, eval < experiments < infra):\n" + \
        "\n".join(upward)


def test_the_module_imports_form_no_cycle():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w, _, _ in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in GRAPH:
        if module not in index:
            visit(module)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_own_modules_are_imported_at_the_top_of_each_file():
    hidden = defaultdict(list)
    for module, edges in GRAPH.items():
        for target, line, at_top in edges:
            if not at_top:
                hidden[module].append(f"{target} (line {line})")
    assert not hidden, "project modules imported inside functions (import them at the top):\n" + \
        "\n".join(f"{m}: {', '.join(v)}" for m, v in sorted(hidden.items()))


def test_the_generic_executor_knows_no_soda_word():
    found = []
    for module, path in MODULES.items():
        if not module.startswith("pipeline"):
            continue
        for number, line in enumerate(open(path, encoding="utf-8"), 1):
            code = line.split("#", 1)[0]
            for word in DOMAIN_WORDS:
                if re.search(rf"\b{word}", code, re.IGNORECASE):
                    found.append(f"{module}:{number}: {word!r} in {line.strip()[:100]}")
    assert not found, "pipeline/ is a generic executor:\n" + "\n".join(found)


def test_the_checker_sees_what_the_checks_need():
    """The checks above fail on a real violation: they see each import, where it is, and whose it is."""
    edges = {t: at_top for t, _, at_top in GRAPH["steps.report"]}
    assert edges.get("eval.tasks") is True and edges.get("pipeline.fileio") is True
    assert "pipeline.step" in {t for t, _, _ in GRAPH["pipeline"]}  # `from pipeline.step import ...` in __init__
    assert _resolve("steps.sharding.run_shards") == "steps.sharding" and _resolve("numpy") is None
    assert _layer("infra.cli") > _layer("experiments.main") > _layer("steps.report") == _layer("eval.model")
