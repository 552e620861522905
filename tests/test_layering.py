"""The Python packages are layers, each built on the ones below it and never on one above:

    tinyconv (command line, demo, report) -> firmware_host (build, devices, verify)
        -> export (import, quantize, C generation) -> runtime (model file, integer executor)

so that runtime/ can be used (and tested) without the exporter, and the exporter without a
device. Imports are read with ast from every module, the ones inside functions too (the
packages import heavy or optional dependencies lazily, so importing a module would miss them).
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("tinyconv", "firmware_host", "export", "runtime")  # from the top down


def _imported(tree: ast.AST):
    """(line, top-level package) of every absolute import, including
    ``importlib.import_module("literal")``; relative imports stay in their own package."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and not node.args[0].value.startswith(".")):
            names = [node.args[0].value]
        else:
            continue
        for name in names:
            yield node.lineno, name.split(".")[0]


def upward_imports(root: Path) -> list[str]:
    """Every import, below ``root``, of a package from a layer above the importing one."""
    found = []
    for rank, package in enumerate(LAYERS):
        for path in sorted((root / package).rglob("*.py")):
            for line, name in _imported(ast.parse(path.read_text(), str(path))):
                if name in LAYERS[:rank]:
                    found.append(f"{path.relative_to(root)}:{line} ({package}) imports {name}")
    return found


def test_no_package_imports_from_a_layer_above_it():
    assert upward_imports(ROOT) == []


def test_every_package_has_its_layer():
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")}
    assert packages == set(LAYERS)


def test_the_check_finds_upward_imports_wherever_they_are(tmp_path):
    sources = {
        "runtime/kernels/deep.py": "def f():\n    from export.qonnx import x\n",
        "runtime/ok.py": "import numpy\nfrom . import kernels\nfrom .kernels import deep\n",
        "export/a.py": "import firmware_host.build as b\n",
        "export/b.py": "import importlib\nimportlib.import_module('tinyconv.cli')\n",
        "firmware_host/ok.py": "import export\nimport runtime\nfrom runtime import model\n",
        "tinyconv/ok.py": "import firmware_host, export, runtime\n",
    }
    for name, text in sources.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert upward_imports(tmp_path) == [
        "export/a.py:1 (export) imports firmware_host",
        "export/b.py:2 (export) imports tinyconv",
        "runtime/kernels/deep.py:2 (runtime) imports export",
    ]
