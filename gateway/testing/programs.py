"""Real programs a test starts (promtool, xmlsec1, Chromium, PostgreSQL, HAProxy).

`make test` installs each one's Debian package when it is missing and the user is root (the
Makefile's ``TOOLS`` list). A test that still finds one missing skips on a workstation, but fails
under ``CI=true``: there a skipped check would look like a passed one.
"""
from __future__ import annotations

import os
import shutil

import pytest


def require_program(command: str, package: str) -> str:
    """The path of ``command``; a skip, or under ``CI=true`` a failure, naming ``package`` when missing."""
    path = shutil.which(command)
    if path is None:
        why = f"{command} is not installed (Debian's {package} package; `make test` installs it as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{why}, and CI=true needs it")
        pytest.skip(why)
    return path
