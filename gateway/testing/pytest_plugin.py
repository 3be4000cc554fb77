"""The ``pytest11`` entry point of the gateway: loads :mod:`gateway.testing.fixtures` when the
testing extra is installed.

pytest imports every installed ``pytest11`` plugin at start-up, so an import error here would stop
pytest in any environment that has the gateway, even one that tests something else. Without
pytest-twisted (``pip install 'hssk-gateway[testing]'``), the fixtures are left out and the
header of the test run says why.
"""
from __future__ import annotations

from importlib.util import find_spec

FIXTURES_AVAILABLE = find_spec("pytest_twisted") is not None

pytest_plugins = ["gateway.testing.fixtures"] if FIXTURES_AVAILABLE else []


def pytest_report_header() -> list[str]:
    if FIXTURES_AVAILABLE:
        return []
    return ["hssk-gateway: the hssk_* fixtures are off, pytest-twisted is not installed "
            "(pip install 'hssk-gateway[testing]')"]
