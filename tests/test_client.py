"""The UWS client against the simulator over real HTTP: operations, sessions, failures."""

import asyncio
import logging
from pathlib import Path

import httpx
import pytest
import zeep

from models.devices import DeviceIdentifier
from models.instants import parse_instant
from soap import replies
from soap.client import UwsClient
from soap.contract import (
    DEVICE_NOT_FOUND,
    INPUT_INVALID,
    LOGIN_FAILED,
    SESSION_EXPIRED,
    SESSION_INVALID,
    SOAP_ENV,
)
from soap.errors import (
    UpstreamBadReply,
    UpstreamError,
    UpstreamFault,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from soap.simulator.fleet import SEED_TOKEN

DATA = Path(__file__).parent / "data"
SEED_MEID = DeviceIdentifier("meid", "54689785258599")
JAN_2017 = (parse_instant("2017-01-01"), parse_instant("2017-01-31T23:59:59.9999999Z"))


async def test_seed_device_history_holds_the_seed_events(uws, upstream):
    window = await uws.get_device_provisioning_history(SEED_MEID, *JAN_2017)

    seed_events = [
        e
        for e in window.events
        if e.event_by == "John Admin"
        and e.mdn
        and e.occurred_at
        in (parse_instant("2017-01-02T12:00:48.21Z"), parse_instant("2017-01-02T12:02:06.22Z"))
    ]
    assert [(e.event_type, e.status, e.service_plan, e.mdn) for e in seed_events] == [
        ("Suspension Confirmed", "Success", None, "5348152777"),
        ("Resume Confirmed", "Success", None, "5348152777"),
    ]
    assert window.is_complete
    assert upstream.calls() == 1
    assert upstream.calls("LogIn") == 1


def test_seed_response_example_parses_field_for_field():
    body = f'<s:Envelope xmlns:s="{SOAP_ENV}"><s:Body>'.encode()
    body += (DATA / "seed_history_response.xml").read_bytes() + b"</s:Body></s:Envelope>"

    window = replies.history_window("GetDeviceProvisioningHistory", 200, body)

    assert window.is_complete is True
    assert [tuple(e) for e in window.events] == [
        (
            parse_instant("2017-01-02T12:00:48.21Z"),
            "Success",
            "John Admin",
            "Suspension Confirmed",
            None,
            "5348152777",
            None,
            (),
        ),
        (
            parse_instant("2017-01-02T12:02:06.22Z"),
            "Success",
            "John Admin",
            "Resume Confirmed",
            None,
            "5348152777",
            None,
            (),
        ),
    ]


async def test_seed_request_example_is_answered_with_seed_events(upstream):
    # The published request, with its element names corrected and date-only bounds.
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{upstream.base_url}/DeviceService.svc",
            content=(DATA / "seed_history_request.xml").read_bytes(),
            headers={
                "Content-Type": "text/xml; charset=utf-8",
                "SOAPAction": '"http://nphase.com/unifiedwebservice/v2/IDeviceService/'
                'GetDeviceProvisioningHistory"',
            },
        )
    window = replies.history_window(
        "GetDeviceProvisioningHistory", response.status_code, response.content
    )
    instants = {e.occurred_at for e in window.events}
    assert response.status_code == 200
    assert {
        parse_instant("2017-01-02T12:00:48.21Z"),
        parse_instant("2017-01-02T12:02:06.22Z"),
    } <= instants


async def test_seven_digit_instants_survive_the_round_trip(uws, upstream):
    device = upstream.fleet.by_name("sub-millisecond")
    truth = upstream.fleet.history(device)
    # Ask for exactly one instant: both bounds carry all seven fractional digits.
    target = next(e for e in truth if e.occurred_at % 10)
    window = await uws.get_device_provisioning_history(
        device.primary, target.occurred_at, target.occurred_at
    )
    assert list(window.events) == [e for e in truth if e.occurred_at == target.occurred_at]


async def test_history_reply_is_capped_at_500_and_says_incomplete(uws, upstream):
    device = upstream.fleet.by_name("twelve-thousand")
    truth = upstream.fleet.history(device)
    window = await uws.get_device_provisioning_history(
        device.primary, truth[0].occurred_at, truth[-1].occurred_at
    )
    assert list(window.events) == list(truth[:500])
    assert window.is_complete is False


async def test_exactly_500_events_come_complete_in_one_reply(uws, upstream):
    device = upstream.fleet.by_name("exactly-500")
    truth = upstream.fleet.history(device)
    window = await uws.get_device_provisioning_history(
        device.primary, truth[0].occurred_at, truth[-1].occurred_at
    )
    assert len(window.events) == 500
    assert window.is_complete is True


async def test_kinds_compare_case_insensitively(uws, upstream):
    window = await uws.get_device_provisioning_history(
        DeviceIdentifier("MEID", "54689785258599"), *JAN_2017
    )
    assert window.events


async def test_device_list_pages_without_gaps_or_overlaps(uws, upstream):
    upstream.simulator.state.knobs.device_list_cap = 120
    seen: list[int] = []
    largest = None
    while True:
        page = await uws.get_device_list(largest)
        assert len(page.devices) <= 120
        seen += [d.device_id for d in page.devices]
        largest = page.largest_device_id_seen
        if page.is_complete:
            break
    assert seen == [d.device_id for d in upstream.fleet.devices]
    assert upstream.calls("GetDeviceList") == -(-len(upstream.fleet.devices) // 120)
    first = (await uws.get_device_list()).devices[0]
    assert first.identifiers[0] == SEED_MEID
    assert first.account_name


async def test_unknown_device_is_a_typed_fault(uws):
    with pytest.raises(UpstreamFault) as caught:
        await uws.get_device_provisioning_history(
            DeviceIdentifier("imei", "000000000000000"), *JAN_2017
        )
    assert caught.value.code == DEVICE_NOT_FOUND


async def test_invalid_identifier_is_an_input_fault(uws):
    with pytest.raises(UpstreamFault) as caught:
        await uws.get_device_provisioning_history(DeviceIdentifier("imei", "12'3"), *JAN_2017)
    assert caught.value.code.startswith(INPUT_INVALID)


async def test_concurrent_first_calls_share_one_login(uws, upstream):
    await asyncio.gather(
        *(uws.get_device_provisioning_history(SEED_MEID, *JAN_2017) for _ in range(10))
    )
    assert upstream.calls("LogIn") == 1
    assert upstream.calls() == 10


async def test_expired_session_logs_in_again_once(uws, upstream):
    await uws.get_device_provisioning_history(SEED_MEID, *JAN_2017)
    upstream.simulator.state.idle_sessions(21 * 60)

    await asyncio.gather(
        *(uws.get_device_provisioning_history(SEED_MEID, *JAN_2017) for _ in range(5))
    )
    assert upstream.calls("LogIn") == 2
    assert upstream.calls() == 1 + 5 + 5


async def test_a_session_in_use_does_not_expire(uws, upstream):
    await uws.get_device_provisioning_history(SEED_MEID, *JAN_2017)
    upstream.simulator.state.idle_sessions(19 * 60)
    await uws.get_device_provisioning_history(SEED_MEID, *JAN_2017)
    upstream.simulator.state.idle_sessions(19 * 60)
    await uws.get_device_provisioning_history(SEED_MEID, *JAN_2017)
    assert upstream.calls("LogIn") == 1


async def test_a_session_expired_again_right_after_login_is_an_error(uws, upstream):
    await uws.get_device_provisioning_history(SEED_MEID, *JAN_2017)
    upstream.simulator.state.knobs.session_idle_s = -1.0  # every session is always stale

    with pytest.raises(UpstreamFault) as caught:
        await uws.get_device_provisioning_history(SEED_MEID, *JAN_2017)
    assert caught.value.code == SESSION_EXPIRED
    assert upstream.calls("LogIn") == 2  # one fresh login, not a loop


async def test_fixed_token_is_used_and_never_replaced(upstream):
    good = await UwsClient.open(upstream.base_url, timeout_s=5, token=SEED_TOKEN)
    bad = await UwsClient.open(upstream.base_url, timeout_s=5, token="not-a-session")
    try:
        assert (await good.get_device_provisioning_history(SEED_MEID, *JAN_2017)).events
        with pytest.raises(UpstreamFault) as caught:
            await bad.get_device_provisioning_history(SEED_MEID, *JAN_2017)
    finally:
        await good.aclose()
        await bad.aclose()
    assert caught.value.code == SESSION_INVALID
    assert "not-a-session" not in str(caught.value)
    assert upstream.calls("LogIn") == 0


async def test_log_out_ends_the_session(uws, upstream):
    await uws.get_device_provisioning_history(SEED_MEID, *JAN_2017)
    await uws.log_out()
    assert upstream.calls("LogOut") == 1
    await uws.get_device_provisioning_history(SEED_MEID, *JAN_2017)
    assert upstream.calls("LogIn") == 2


async def test_wrong_password_is_a_typed_fault_without_the_password(upstream, caplog):
    caplog.set_level(logging.DEBUG)
    client = await UwsClient.open(
        upstream.base_url, timeout_s=5, username="demo", password="hunter2-secret"
    )
    try:
        with pytest.raises(UpstreamFault) as caught:
            await client.get_device_provisioning_history(SEED_MEID, *JAN_2017)
    finally:
        await client.aclose()
    assert caught.value.code == LOGIN_FAILED
    assert "hunter2-secret" not in str(caught.value)
    assert "hunter2-secret" not in caplog.text


async def test_no_credential_reaches_the_logs(uws, upstream, caplog):
    caplog.set_level(logging.DEBUG)
    await uws.get_device_provisioning_history(SEED_MEID, *JAN_2017)
    session = uws._session
    assert session
    assert session not in caplog.text
    assert "<v2:token>" not in caplog.text
    assert "demo</" not in caplog.text


@pytest.mark.parametrize(
    ("kind", "error", "transient"),
    [
        ("http500", UpstreamUnavailable, False),
        ("http503", UpstreamUnavailable, True),
        ("fault", UpstreamFault, False),
        ("not_xml", UpstreamBadReply, False),
        ("truncated", UpstreamBadReply, False),
        ("empty", UpstreamBadReply, False),
    ],
)
async def test_injected_failures_become_typed_errors(uws, upstream, kind, error, transient):
    await uws.get_device_provisioning_history(SEED_MEID, *JAN_2017)
    upstream.simulator.state.fail_next(kind, operation="GetDeviceProvisioningHistory")

    with pytest.raises(error) as caught:
        await uws.get_device_provisioning_history(SEED_MEID, *JAN_2017)

    assert caught.value.transient is transient
    assert caught.value.operation == "GetDeviceProvisioningHistory"
    # The failure was one call's: the next one succeeds.
    assert (await uws.get_device_provisioning_history(SEED_MEID, *JAN_2017)).events


async def test_http_status_is_kept_on_unavailable(uws, upstream):
    upstream.simulator.state.fail_next("http503")
    with pytest.raises(UpstreamUnavailable) as caught:
        await uws.get_device_provisioning_history(SEED_MEID, *JAN_2017)
    assert caught.value.status_code == 503


async def test_injected_fault_keeps_its_code_without_service_prefix(uws, upstream):
    upstream.simulator.state.knobs.fault_code = "UnifiedWebService.REQUEST_FAILED.AccountNotFound"
    upstream.simulator.state.fail_next("fault", operation="GetDeviceProvisioningHistory")
    with pytest.raises(UpstreamFault) as caught:
        await uws.get_device_provisioning_history(SEED_MEID, *JAN_2017)
    assert caught.value.code == "REQUEST_FAILED.AccountNotFound"


async def test_random_failures_come_at_the_set_rate_in_the_set_kinds(uws, upstream):
    knobs = upstream.simulator.state.knobs
    knobs.failure_rate, knobs.failure_mix = 0.25, "http503,fault"
    outcomes: dict[str, int] = {}
    for _ in range(200):
        try:
            await uws.get_device_provisioning_history(SEED_MEID, *JAN_2017)
            outcome = "ok"
        except UpstreamError as error:
            outcome = type(error).__name__
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert set(outcomes) == {"ok", "UpstreamUnavailable", "UpstreamFault"}
    assert 25 <= 200 - outcomes["ok"] <= 75  # 50 expected
    knobs.failure_rate = 0.0
    await uws.get_device_provisioning_history(SEED_MEID, *JAN_2017)


async def test_a_hang_becomes_a_timeout(upstream):
    upstream.simulator.state.knobs.hang_s = 2.0
    client = await UwsClient.open(upstream.base_url, timeout_s=0.3, token=SEED_TOKEN)
    upstream.simulator.state.fail_next("hang")
    try:
        with pytest.raises(UpstreamTimeout):
            await client.get_device_provisioning_history(SEED_MEID, *JAN_2017)
    finally:
        await client.aclose()


async def test_unreachable_upstream_is_unavailable():
    from soap.simulator.background import listening_socket

    sock = listening_socket()
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    client = await UwsClient.open(f"http://127.0.0.1:{port}/api/v2", timeout_s=2, token="t")
    try:
        with pytest.raises(UpstreamUnavailable) as caught:
            await client.get_device_provisioning_history(SEED_MEID, *JAN_2017)
    finally:
        await client.aclose()
    assert caught.value.transient


async def test_simulator_serves_a_wsdl_zeep_can_load(upstream):
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{upstream.base_url}/DeviceService.svc?wsdl")
    assert response.status_code == 200
    assert f'location="{upstream.base_url}/DeviceService.svc"' in response.text
    document = await asyncio.to_thread(zeep.Client, f"{upstream.base_url}/DeviceService.svc?wsdl")
    operations = next(iter(document.wsdl.services.values())).ports
    binding = next(iter(operations.values())).binding
    assert sorted(binding._operations) == ["GetDeviceList", "GetDeviceProvisioningHistory"]


async def test_simulator_rejects_an_unknown_soap_action(upstream):
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{upstream.base_url}/DeviceService.svc",
            content=(DATA / "seed_history_request.xml").read_bytes(),
            headers={"Content-Type": "text/xml", "SOAPAction": '"urn:nothing"'},
        )
    assert response.status_code == 500
    with pytest.raises(UpstreamFault) as caught:
        replies.history_window("x", response.status_code, response.content)
    assert "ActionNotSupported" in caught.value.code
    assert upstream.calls() == 0
