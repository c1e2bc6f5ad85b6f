from pathlib import Path

import httpx
import pytest

from tests.servers import AppServer, EchoApp, GatewayServer, gateway_yaml


@pytest.fixture(scope="module")
def echo():
    app = EchoApp()
    server = AppServer(app)
    server.app = app
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gw(echo):
    server = GatewayServer(gateway_yaml({"echo": echo.url}, [("echo", "/", "echo")]))
    yield server
    server.stop()


@pytest.fixture
def client():
    with httpx.Client(timeout=10) as c:
        yield c


@pytest.fixture(scope="session", autouse=True)
def quiet_logs():
    # JSON, warnings and up: keeps test output readable; tests that read logs use subprocesses.
    from gateway.logs import configure_logging

    configure_logging("warning", "json")


_E2E = Path(__file__).resolve().parent / "e2e"


def pytest_collection_modifyitems(items):
    """Everything under tests/e2e/ is an end-to-end test: `pytest -m "not e2e"` runs the rest."""
    for item in items:
        if _E2E in Path(item.fspath).resolve().parents:
            item.add_marker(pytest.mark.e2e)
