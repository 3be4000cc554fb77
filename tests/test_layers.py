"""The package layout shows the layers, and imports run one way: down (the README's "Layout").

A module may import its own layer and the layers below it, never one above. Every import counts,
wherever it stands: at module level, inside a function, under ``if TYPE_CHECKING:``. A plugin
imports of the gateway only its public surface, and a plugin's tests the plugin kit besides.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: Bottom up: each layer, and the packages and modules it holds (``gateway`` is the package's own
#: ``__init__``, which holds the version).
LAYERS = (
    ("model", ("gateway", "gateway.model", "gateway.config", "gateway.logs")),
    ("formats", ("gateway.formats",)),
    ("rules", ("gateway.rules",)),
    ("machinery", ("gateway.core", "gateway.sources", "gateway.destinations")),
    ("transports", ("gateway.transports",)),
    ("top", ("gateway.app", "gateway.cli", "gateway.cli_persons", "gateway.cli_audit", "gateway.cli_reports", "gateway.plugin", "gateway.testing", "gateway.scaffold")),
)
PLUGIN_SURFACE = ("gateway.plugin",)
PLUGIN_KIT = ("gateway.testing",)


def _within(module: str, names: tuple[str, ...]) -> str | None:
    """The longest of ``names`` that is ``module`` or a package holding it."""
    holding = [n for n in names if module == n or (n != "gateway" and module.startswith(n + "."))]
    return max(holding, key=len, default=None)


def layer_of(module: str) -> tuple[int, str] | None:
    """(height, name) of the layer that holds ``module``, None for a module no layer names."""
    found = []
    for height, (name, members) in enumerate(LAYERS):
        member = _within(module, members)
        if member is not None:
            found.append((len(member), height, name))
    return max(found)[1:] if found else None


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in ``path``, wherever it stands, in line order; ``from
    package import name`` imports ``package.name`` when that is a module under ``root``."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                candidate = root.joinpath(*base.split("."), alias.name)
                is_module = candidate.with_suffix(".py").is_file() or (candidate / "__init__.py").is_file()
                found.append((node.lineno, f"{base}.{alias.name}" if is_module else base))
    return sorted(set(found))


def imports_against_the_layers(root: Path) -> list[str]:
    """Every import under ``root / "gateway"`` that runs up the layers, as ``file:line: module
    (layer) imports target (layer), a layer above``; a module no layer holds is named too."""
    problems = []
    for path in sorted((root / "gateway").rglob("*.py")):
        module, where = module_name(path, root), path.relative_to(root)
        own = layer_of(module)
        if own is None:
            problems.append(f"{where}: {module} is in no layer (add it to LAYERS and the README's Layout)")
            continue
        for line, target in imports_of(path, root):
            theirs = layer_of(target)
            if theirs is not None and theirs[0] > own[0]:
                problems.append(f"{where}:{line}: {module} ({own[1]}) imports {target} ({theirs[1]}), a layer above")
    return problems


def test_every_import_in_the_gateway_runs_down_the_layers():
    problems = imports_against_the_layers(REPO)

    assert not problems, "imports against the layers:\n" + "\n".join(problems)


def test_plugins_import_only_the_plugin_surface_and_their_tests_the_kit_besides():
    problems = []
    for path in sorted((REPO / "plugins").rglob("*.py")):
        where = path.relative_to(REPO)
        allowed = PLUGIN_SURFACE + (PLUGIN_KIT if "tests" in where.parts else ())
        for line, target in imports_of(path, REPO):
            if target.split(".")[0] == "gateway" and _within(target, allowed) is None:
                problems.append(f"{where}:{line}: imports {target}; a plugin imports {' and '.join(allowed)}")

    assert not problems, "plugins importing past their surface:\n" + "\n".join(problems)


def test_an_import_up_the_layers_is_named_wherever_it_stands(tmp_path):
    for empty in ("__init__.py", "app.py", "formats/__init__.py", "core/__init__.py", "core/sources.py"):
        (tmp_path / "gateway" / empty).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "gateway" / empty).write_text("")
    (tmp_path / "gateway" / "formats" / "wrong.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from gateway.model.records import RecordSet\n"
        "if TYPE_CHECKING:\n"
        "    from gateway.core.sources import Source\n"
        "def late():\n"
        "    from gateway import app\n"
        "    from .. import core\n")

    assert imports_against_the_layers(tmp_path) == [
        "gateway/formats/wrong.py:4: gateway.formats.wrong (formats) imports gateway.core.sources (machinery), "
        "a layer above",
        "gateway/formats/wrong.py:6: gateway.formats.wrong (formats) imports gateway.app (top), a layer above",
        "gateway/formats/wrong.py:7: gateway.formats.wrong (formats) imports gateway.core (machinery), a layer above",
    ]
