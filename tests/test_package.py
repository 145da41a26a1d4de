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


def _imports(path: pathlib.Path) -> set[str]:
    """The package modules ``path`` imports anywhere in its body (deferred imports inside functions count too)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "convgru_ext")
        elif isinstance(node, ast.ImportFrom):
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


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def test_the_contract_imports_nothing_from_the_package():
    assert _imports(PACKAGE / "_contract.py") == set()


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
    assert _imports(PACKAGE / "_build.py") == set()
