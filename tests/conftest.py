"""Session fixtures: real local servers, started once and stopped by PID."""

from __future__ import annotations

import os

import pytest

from testbed.servers import MotoServer, NginxServer

#: The session's server fixtures: a test that needs one, directly or through another
#: fixture, is an end-to-end test on the local servers (marked ``integration``).
SERVER_FIXTURES = frozenset({"nginx_server", "moto_server"})


def pytest_collection_modifyitems(config, items):
    """Mark tests on the session's servers ``integration`` (modules that start servers
    of their own mark themselves), and skip tests marked ``network`` unless
    RASTERET_NETWORK_TESTS=1."""
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
    if os.environ.get("RASTERET_NETWORK_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="needs the real cloud (set RASTERET_NETWORK_TESTS=1)")
    for item in items:
        if "network" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _isolated_workspace(tmp_path_factory):
    """Never touch the user's ~/.rasteret during tests."""
    os.environ["RASTERET_WORKSPACE"] = str(tmp_path_factory.mktemp("default-workspace"))


@pytest.fixture(scope="session")
def nginx_server(tmp_path_factory):
    """nginx serving a session folder (``nginx_server.root``) with Range support."""
    with NginxServer(root=tmp_path_factory.mktemp("www")) as server:
        yield server


@pytest.fixture(scope="session")
def moto_server():
    """moto's S3 API with fake credentials."""
    with MotoServer() as server:
        yield server
