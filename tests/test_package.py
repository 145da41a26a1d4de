"""The package's import structure: the argument contract is its ground floor, and no modules import each other."""

import ast
import pathlib

import convgru_ext

PACKAGE = pathlib.Path(convgru_ext.__file__).parent


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    path = PACKAGE.parent / name.replace(".", "/")
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _import_nodes(tree: ast.AST, deferred: bool):
    """The import statements of ``tree``: those run at import time, or (``deferred``) those inside functions."""
    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, (ast.Import, ast.ImportFrom)) and inside == deferred:
                yield child
            yield from visit(child, inside)
    return visit(tree, False)


def _imports(path: pathlib.Path, deferred: bool = False) -> set[str]:
    """The package modules ``path`` imports at import time (``deferred``: inside its functions instead)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in _import_nodes(ast.parse(path.read_text()), deferred):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "convgru_ext")
        else:
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target.split(".")[0] != "convgru_ext":
                continue
            for a in node.names:  # `from . import backends` imports that module; `from .x import f`, x
                candidate = f"{target}.{a.name}"
                found.add(candidate if _is_module(candidate) else target)
    return found - {name}


#: the pairs of modules that import each other, each kept out of import time by a deferred import:
#: - the classmethods ``ConvGRUCell.from_raft`` and ``SepConvGRU.from_raft`` call raft.py, which builds on modules.py;
#: - the Triton cost model (triton/model.py) reads the kernels' own tile rule from triton/ops.py, whose graph rule
#:   asks the model for a loop's GPU time
BACK_EDGES = {("convgru_ext.modules", "convgru_ext.raft"),
              ("convgru_ext.backends.triton.model", "convgru_ext.backends.triton.ops")}


def _graph() -> dict[str, set[str]]:
    """Every import between package modules, at import time or inside functions, less BACK_EDGES."""
    graph = {_module_name(p): _imports(p) | _imports(p, deferred=True) for p in PACKAGE.rglob("*.py")}
    return {module: {d for d in deps if (module, d) not in BACK_EDGES} for module, deps in graph.items()}


def test_the_contract_imports_nothing_from_the_package():
    assert _imports(PACKAGE / "_contract.py") | _imports(PACKAGE / "_contract.py", deferred=True) == set()


def test_no_modules_import_each_other():
    graph, cycles, state = _graph(), [], {}

    def visit(module, path):
        state[module] = "open"
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == "open":
                loop = path[path.index(dep):] + [module, dep] if dep in path else [module, dep]
                cycles.append(" -> ".join(loop))
            elif dep in graph and dep not in state:
                visit(dep, path + [module])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert not cycles, cycles


def test_the_contracts_importers_include_every_backend():  # the check above looks at the right file
    importers = {m for m, deps in _graph().items() if "convgru_ext._contract" in deps}
    assert {"convgru_ext.backends", "convgru_ext.backends.base", "convgru_ext.functional"} <= importers


def test_the_build_description_imports_nothing_from_the_package():  # setup.py loads it by path, before torch
    assert _imports(PACKAGE / "_build.py") | _imports(PACKAGE / "_build.py", deferred=True) == set()


def test_the_back_edges_are_deferred_imports():
    for module, dep in BACK_EDGES:
        path = PACKAGE.parent / (module.replace(".", "/") + ".py")
        assert dep in _imports(path, deferred=True) and dep not in _imports(path), (module, dep)
