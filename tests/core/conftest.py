import pytest

from tests.core.fault_plugin import install_fault_plugin


@pytest.fixture
def fault_plugin(tmp_path, monkeypatch):
    """The misbehaving ``fault_his`` plugin, installed for this process and its children; the
    pid file that records which process decided each control id."""
    return install_fault_plugin(tmp_path, monkeypatch)
