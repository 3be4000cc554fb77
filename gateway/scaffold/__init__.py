"""``hssk-gateway plugin new NAME``: a new plugin package, ready to test and install.

The files are templates under ``template/`` (``string.Template``: ``$module``, ``$sender``…, in
file names too), kept as files rather than strings so that they read as what they become: a
``pyproject.toml`` registering the ``hssk_gateway.plugins`` entry point, a plugin module written
against ``gateway.plugin`` only, two sample messages, tests that use the gateway's kit (including
the one-line conformance suite) and a README that says what to edit.
"""
from __future__ import annotations

import keyword
import re
from pathlib import Path
from string import Template

from gateway import __version__
from gateway.core.contract import CONTRACT_VERSION

TEMPLATE = Path(__file__).resolve().parent / "template"
#: A plugin's name is its entry-point name, its Python package and its ``[plugins.NAME]`` table.
_NAME = re.compile(r"[a-z][a-z0-9_]{1,39}")


class ScaffoldError(ValueError):
    """The plugin cannot be written as asked (a bad name, a directory already there)."""


def template_values(name: str) -> dict[str, str]:
    """What the templates are filled with for plugin ``name``."""
    if not _NAME.fullmatch(name) or keyword.iskeyword(name):
        raise ScaffoldError(f"plugin name {name!r}: use 2-40 lower-case letters, digits and underscores, starting "
                            f"with a letter (it is the Python package, the entry-point name and [plugins.{name}])")
    words = name.split("_")
    return {
        "module": name,
        "project": "hssk-plugin-" + name.replace("_", "-"),
        "sender": name.upper(),
        "class_name": "".join(w.capitalize() for w in words if w) + "Plugin",
        "control_prefix": "".join(w[:1] for w in words if w).upper(),
        "contract": CONTRACT_VERSION,
        "gateway_version": __version__,
    }


def write_plugin(name: str, directory: Path) -> tuple[Path, list[Path]]:
    """Write the package for plugin ``name`` into ``directory/<name>``; returns that folder and
    the files written. Nothing is overwritten: an existing folder is refused."""
    values = template_values(name)
    root = Path(directory) / name
    if root.exists():
        raise ScaffoldError(f"{root} already exists; choose another --directory or remove it")
    written = []
    for source in sorted(p for p in TEMPLATE.rglob("*.tmpl") if p.is_file()):
        relative = Template(str(source.relative_to(TEMPLATE).with_suffix(""))).substitute(values)
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(Template(source.read_text(encoding="utf-8")).substitute(values), encoding="utf-8")
        written.append(target)
    return root, written
