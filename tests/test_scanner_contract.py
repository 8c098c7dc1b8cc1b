"""collector/_fastcopy.pyi is the page scanner's contract: the compiled module and its pure-Python
twin offer exactly what it declares, name for name and parameter for parameter, and the twin's
annotations are the contract's (python-zstandard's tests/test_module_attributes.py is the model).
A change to one implementation that the other or the contract misses fails here, not in a dump."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from types import ModuleType

import pytest

from collector import _fastcopy_py

compiled: ModuleType | None
try:
    from collector import _fastcopy as compiled
except ImportError:  # the suite also runs where only the twin exists
    compiled = None

STUB = Path(_fastcopy_py.__file__).with_name("_fastcopy.pyi")


def stub_definitions() -> dict[str, ast.FunctionDef | ast.ClassDef]:
    return {node.name: node for node in ast.parse(STUB.read_text()).body
            if isinstance(node, ast.FunctionDef | ast.ClassDef)}


def stub_functions() -> dict[str, ast.FunctionDef]:
    """Every function of the contract by qualified name (PageEncoder.encode), methods included."""
    functions = {}
    for name, node in stub_definitions().items():
        if isinstance(node, ast.FunctionDef):
            functions[name] = node
        else:
            functions.update((f"{name}.{item.name}", item) for item in node.body if isinstance(item, ast.FunctionDef))
    return functions


def parameters(node: ast.FunctionDef) -> list[str]:
    return [arg.arg for arg in node.args.args]


def public_definitions(module: ModuleType) -> set[str]:
    """The functions and classes a module defines itself (not the constants it imports)."""
    return {name for name, value in vars(module).items()
            if not name.startswith("_") and (inspect.isclass(value) or callable(value))
            and getattr(value, "__module__", None) == module.__name__}


IMPLEMENTATIONS = [pytest.param(_fastcopy_py, id="twin"),
                   pytest.param(compiled, id="compiled",
                                marks=pytest.mark.skipif(compiled is None, reason="compiled module not built"))]


@pytest.mark.parametrize("module", IMPLEMENTATIONS)
def test_each_scanner_defines_exactly_the_contracts_functions_and_classes(module):
    assert public_definitions(module) == set(stub_definitions())


@pytest.mark.parametrize("module", IMPLEMENTATIONS)
def test_each_scanner_takes_the_contracts_parameters_in_its_order(module):
    for qualname, node in stub_functions().items():
        if qualname.endswith(".__init__"):
            continue  # a Cython class takes its arguments in __cinit__: checked by calling it below
        function = module
        for part in qualname.split("."):
            function = getattr(function, part)
        assert list(inspect.signature(function).parameters) == parameters(node), qualname


@pytest.mark.parametrize("module", IMPLEMENTATIONS)
def test_each_page_encoder_is_built_from_the_contracts_keywords(module):
    init = stub_functions()["PageEncoder.__init__"]
    encoder = module.PageEncoder(**dict.fromkeys(parameters(init)[1:], 0) | {"page_size": 4096})
    assert (encoder.page_flag, encoder.level, encoder.page_size) == (0, 0, 4096)


def test_the_twins_annotations_are_the_contracts():
    for qualname, node in stub_functions().items():
        function = _fastcopy_py
        for part in qualname.split("."):
            function = getattr(function, part)
        declared = {arg.arg: ast.unparse(arg.annotation) for arg in node.args.args if arg.annotation}
        declared["return"] = ast.unparse(node.returns) if node.returns else "None"
        assert function.__annotations__ == declared, qualname
