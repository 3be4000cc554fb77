import os
import uuid

import pytest
import pytest_twisted

from gateway.core.postgres import PostgresStore
from gateway.core.store import Store
from tests.support import TestPlugin, start_gateway


@pytest.fixture
def plugin():
    return TestPlugin()


#: ``HSSK_TEST_BACKEND=postgresql`` puts the ``gateway`` fixture's journal on PostgreSQL, so any
#: test written for it can be run on that backend too (see README "Tests").
TEST_BACKEND = os.environ.get("HSSK_TEST_BACKEND", "sqlite")


@pytest_twisted.async_yield_fixture
async def gateway(tmp_path, plugin, request, monkeypatch):
    """A gateway on 127.0.0.1 (port 0) with the test plugin and a fresh journal under tmp_path
    (on ``HSSK_TEST_BACKEND``, SQLite by default)."""
    gw = await start_gateway(tmp_path / "data", plugins=[plugin],
                             **backend_settings(TEST_BACKEND, request, monkeypatch))
    yield gw
    await gw.stop()


@pytest.fixture
def log_events():
    """Every log event published while the test runs, for tests that prove what is (not) logged."""
    from twisted.logger import globalLogPublisher

    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


@pytest.fixture(scope="session")
def postgres_server():
    """One throwaway PostgreSQL cluster for the whole run (initdb takes seconds); each test that
    needs a database makes its own with ``postgres_dsn``."""
    from gateway.testing.postgres import PostgresServer

    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_dsn(postgres_server):
    """A fresh empty database on the session's PostgreSQL server."""
    name = "t_" + uuid.uuid4().hex[:12]
    return postgres_server.create_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request, tmp_path):
    """An empty, migrated journal on each backend: the same test runs on both."""
    if request.param == "sqlite":
        store = Store(tmp_path / "gateway.db", "NORMAL")
    else:
        store = PostgresStore(request.getfixturevalue("postgres_dsn"), node="node-a", lease_seconds=30.0)
    store.migrate()
    return store


def backend_settings(backend: str, request, monkeypatch, node: str = "node-a") -> dict:
    """Config overrides that put a gateway's journal on ``backend``."""
    if backend == "sqlite":
        return {}
    monkeypatch.setenv("HSSK_TEST_STORE_DSN", request.getfixturevalue("postgres_dsn"))
    return {"store.backend": "postgresql", "store.dsn_env": "HSSK_TEST_STORE_DSN", "store.node": node}


@pytest_twisted.async_yield_fixture(params=["sqlite", "postgresql"])
async def gateway_on_each_backend(request, monkeypatch, tmp_path, plugin):
    """The ``gateway`` fixture's gateway, once with each journal backend."""
    gw = await start_gateway(tmp_path / "data", plugins=[plugin],
                             **backend_settings(request.param, request, monkeypatch))
    yield gw
    await gw.stop()
