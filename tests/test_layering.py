"""Imports go one way: core → frontend → tensor_ir → passes → loop_ir → runtime → backends → api/cli.

A layer may import itself and the layers before it at module level. (The decorator front end reaches the
driver lazily, inside the function that compiles a traced kernel; a lazy import is not a module dependency.)
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ORDER = ["core", "frontend", "tensor_ir", "passes", "loop_ir", "runtime", "backends", "api"]


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "sparsedsl" or len(parts) < 2:
        return None
    head = parts[1]
    if head in ("grammar", "stdlib", "data"):
        return None
    if head in ("api", "cli", "__main__"):
        return "api"
    return head if head in ORDER else None


def files():
    for folder, prefix in ((ROOT / "sparsedsl", "sparsedsl"), (ROOT / "backends", "sparsedsl.backends")):
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            yield path, ".".join([prefix, *parts])


def module_level_imports(tree):
    for node in tree.body:
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def test_imports_go_one_way():
    bad = []
    for path, module in files():
        own = layer_of(module)
        if own is None or module == "sparsedsl":
            continue
        for imported in module_level_imports(ast.parse(path.read_text())):
            other = layer_of(imported)
            if other is not None and ORDER.index(other) > ORDER.index(own):
                bad.append(f"{module} imports {imported}")
    assert not bad, "\n".join(bad)
