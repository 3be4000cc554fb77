"""The plugin contract's version, and what a plugin's declared version must be to load.

A plugin module (or plugin object) says which contract it was written against with a string
attribute ``hssk_contract = "1.0"``. The major number changes when a hook is removed or changes
meaning, so a plugin of another major version is refused; a minor number adds hooks or optional
arguments, so a plugin written for an earlier minor version of this major one loads, and one
written for a later minor version (it may rely on hooks this gateway lacks) is refused.

    >>> contract_problem("1.0"), contract_problem("1.7") is not None, contract_problem("2.0") is not None
    (None, True, True)
"""
from __future__ import annotations

import re

CONTRACT_VERSION = "1.2"
_VERSION = re.compile(r"(\d+)\.(\d+)")


def contract_problem(declared: object) -> str | None:
    """Why a plugin declaring ``declared`` cannot load into this gateway, or None when it can."""
    if declared is None:
        return (f'declares no contract version: add hssk_contract = "{CONTRACT_VERSION}" to the plugin module '
                f"(see gateway.plugin)")
    match = _VERSION.fullmatch(declared) if isinstance(declared, str) else None
    if match is None:
        return f"declares contract {declared!r}, which is not a version like {CONTRACT_VERSION!r}"
    major, minor = (int(n) for n in match.groups())
    own_major, own_minor = (int(n) for n in CONTRACT_VERSION.split("."))
    if major != own_major or minor > own_minor:
        return (f"was written for plugin contract {declared}, and this gateway offers {CONTRACT_VERSION} "
                f"(a plugin loads when the major numbers match and its minor number is not higher)")
    return None
