"""The whole service as `make serve` runs it: embedded simulator, health and readiness."""

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import embedded_service

from server.app import create_app
from server.settings import SIMULATOR_MOUNT, Settings
from soap.simulator.background import listening_socket

DATA = Path(__file__).parent / "data"
SEED_ACTION = '"http://nphase.com/unifiedwebservice/v2/IDeviceService/GetDeviceProvisioningHistory"'


@pytest.fixture
def service(tmp_path: Path) -> Iterator[str]:
    yield from embedded_service(tmp_path)


async def test_healthz_answers_while_the_process_is_up(service):
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{service}/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_checks_the_embedded_upstream_and_stores(service):
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{service}/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {
        "upstream": "ok",
        "database": "ok",
        "cache": "ok (in process)",
        "broker": "ok (in process)",
    }


async def test_the_seed_request_is_answered_by_the_mounted_simulator(service):
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{service}{SIMULATOR_MOUNT}/DeviceService.svc",
            content=(DATA / "seed_history_request.xml").read_bytes(),
            headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": SEED_ACTION},
        )
    assert response.status_code == 200
    assert "<a:OccurredAt>2017-01-02T12:00:48.21Z</a:OccurredAt>" in response.text
    assert "<a:OccurredAt>2017-01-02T12:02:06.22Z</a:OccurredAt>" in response.text


async def test_readyz_reports_an_unreachable_redis(tmp_path):
    dead = listening_socket()
    dead_url = f"redis://127.0.0.1:{dead.getsockname()[1]}/0"
    dead.close()
    for base in embedded_service(tmp_path, cache_url=dead_url):
        async with httpx.AsyncClient() as http:
            response = await http.get(f"{base}/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["cache"].startswith("unreachable")
    assert checks["upstream"] == "ok"


async def test_readyz_sees_a_real_redis(tmp_path, redis_url):
    for base in embedded_service(tmp_path, cache_url=redis_url, broker_url=redis_url):
        async with httpx.AsyncClient() as http:
            response = await http.get(f"{base}/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["cache"] == "ok"
    assert response.json()["checks"]["broker"] == "ok"


def test_a_real_upstream_needs_credentials():
    settings = Settings(_env_file=None, uws_base_url="https://uws.example/api/v2")
    with pytest.raises(ValueError, match="UWS_TOKEN or UWS_USERNAME"):
        create_app(settings)


def test_secrets_do_not_show_in_settings_repr():
    settings = Settings(_env_file=None, uws_token="tok-123", uws_password="pw-456")
    assert "tok-123" not in repr(settings)
    assert "pw-456" not in repr(settings)


def test_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("UWS_BASE_URL", "http://127.0.0.1:9/api/v2/")
    monkeypatch.setenv("UWS_TIMEOUT_S", "2.5")
    monkeypatch.setenv("PORT", "8123")
    settings = Settings(_env_file=None)
    assert settings.upstream_url == "http://127.0.0.1:9/api/v2"
    assert settings.uws_timeout_s == 2.5
    assert settings.port == 8123
    assert not settings.uses_simulator


def test_the_default_upstream_is_the_mounted_simulator():
    settings = Settings(_env_file=None, host="0.0.0.0", port=8000)
    assert settings.upstream_url == "http://127.0.0.1:8000/simulator/api/v2"
    assert settings.upstream_credentials() == {"username": "demo", "password": "demo"}
