"""Upstream replies read exactly: extended attributes in whatever namespace they come,
and devices found when the account may not list them, without walking the list."""

import pytest
from support import document

from models.devices import DeviceIdentifier
from models.events import ExtendedAttribute, ProvisioningEvent
from models.instants import format_api_instant, parse_instant
from soap import replies
from soap.contract import COMMON, DEVICE, SOAP_ENV, V2, XSI
from soap.errors import UpstreamBadReply

OPERATION = "GetDeviceProvisioningHistory"
HISTORY = document("DeviceHistory")
OVERVIEW = document("DeviceOverview")
SCRIPTED = DeviceIdentifier("imei", "351234567890123")
ATTRIBUTES = (
    ExtendedAttribute("OrderId", "ORD-000042"),
    ExtendedAttribute("Note", None),
    ExtendedAttribute("Channel", ""),
)


def scripted_device(api) -> None:
    """A device whose one event carries a value, a nil value and an empty one."""
    event = ProvisioningEvent(
        parse_instant("2019-05-01T10:00:00Z"),
        "Success",
        "api-integration",
        "Activation",
        None,
        None,
        None,
        ATTRIBUTES,
    )
    api.simulator.fleet.script(SCRIPTED, [event])


def ident(device: DeviceIdentifier) -> dict[str, str]:
    return {"kind": device.kind.upper(), "identifier": device.identifier}


@pytest.mark.parametrize("namespace", ["device", "common", "none"])
async def test_extended_attributes_in_common_namespace_are_read(uws, upstream, namespace):
    upstream.simulator.state.knobs.attributes_namespace = namespace
    device = upstream.fleet.by_name("exactly-500")
    truth = upstream.fleet.history(device)
    assert sum(bool(e.extended_attributes) for e in truth) > 50

    window = await uws.get_device_provisioning_history(
        device.primary, truth[0].occurred_at, truth[-1].occurred_at
    )

    assert window.events == truth
    assert window.is_complete


async def test_extended_attributes_in_common_namespace_are_read_over_graphql(api):
    api.simulator.state.knobs.attributes_namespace = "common"
    scripted_device(api)

    body = await api.query(HISTORY, {**ident(SCRIPTED), "first": 5})

    (edge,) = body["data"]["device"]["provisioningHistory"]["edges"]
    assert edge["node"]["extendedAttributes"] == [
        {"key": "OrderId", "value": "ORD-000042"},
        {"key": "Note", "value": None},
        {"key": "Channel", "value": ""},
    ]


async def test_unreadable_extended_attribute_is_upstream_bad_reply(api):
    api.simulator.state.knobs.attributes_namespace = "common"
    api.simulator.state.knobs.attribute_key_element = "Name"
    scripted_device(api)

    body = await api.query(HISTORY, {**ident(SCRIPTED), "first": 5}, expect_errors=True)

    (error,) = body["errors"]
    assert error["extensions"]["code"] == UpstreamBadReply.category
    assert error["path"] == ["device", "provisioningHistory"]
    assert "extended attribute with no Key" in error["message"]
    assert body["data"]["device"] is None


def reply_with_attributes(attributes: str) -> bytes:
    """A one-event GetDeviceProvisioningHistory reply whose ExtendedAttributes hold these."""
    return (
        f'<s:Envelope xmlns:s="{SOAP_ENV}"><s:Body>'
        f'<GetDeviceProvisioningHistoryResponse xmlns="{V2}">'
        f'<Output xmlns:a="{DEVICE}" xmlns:i="{XSI}">'
        "<a:ProvisioningHistory><a:ProvisioningEvent>"
        "<a:OccurredAt>2017-01-02T12:00:48.21Z</a:OccurredAt><a:Status>Success</a:Status>"
        "<a:EventType>Activation</a:EventType>"
        f"<a:ExtendedAttributes>{attributes}</a:ExtendedAttributes>"
        "</a:ProvisioningEvent></a:ProvisioningHistory><a:IsComplete>true</a:IsComplete>"
        "</Output></GetDeviceProvisioningHistoryResponse></s:Body></s:Envelope>"
    ).encode()


def test_attributes_are_read_under_a_namespace_declared_on_the_element():
    body = reply_with_attributes(
        f'<c:ExtendedAttributesObj xmlns:c="{COMMON}"><!-- a comment -->'
        '<c:Key>OrderId</c:Key><c:Value i:nil="true"/></c:ExtendedAttributesObj>'
    )
    (event,) = replies.history_window(OPERATION, 200, body).events
    assert event.extended_attributes == (ExtendedAttribute("OrderId", None),)


@pytest.mark.parametrize(
    ("attributes", "problem"),
    [
        (f'<c:Attribute xmlns:c="{COMMON}"><c:Key>K</c:Key></c:Attribute>', "unexpected Attribute"),
        (
            f'<c:ExtendedAttributesObj xmlns:c="{COMMON}"><c:Key i:nil="true"/>'
            "<c:Value>V</c:Value></c:ExtendedAttributesObj>",
            "a nil Key",
        ),
        (
            f'<c:ExtendedAttributesObj xmlns:c="{COMMON}"><c:Key>K</c:Key>'
            "<c:Value><c:Text>V</c:Text></c:Value></c:ExtendedAttributesObj>",
            "Value is not text",
        ),
    ],
)
def test_an_attribute_that_cannot_be_read_is_never_an_empty_one(attributes, problem):
    with pytest.raises(UpstreamBadReply) as caught:
        replies.history_window(OPERATION, 200, reply_with_attributes(attributes))
    assert problem in caught.value.message


async def test_unreadable_extended_attribute_fails_the_client_call(uws, upstream):
    upstream.simulator.state.knobs.attribute_key_element = "AttributeName"
    device = upstream.fleet.by_name("exactly-500")
    truth = upstream.fleet.history(device)

    with pytest.raises(UpstreamBadReply):
        await uws.get_device_provisioning_history(
            device.primary, truth[0].occurred_at, truth[-1].occurred_at
        )


@pytest.mark.parametrize(
    ("refusal", "upstream_code"),
    [("unsupported", "s:Client"), ("access", "REQUEST_FAILED.AccessDenied")],
)
async def test_device_found_when_device_list_faults(api, refusal, upstream_code):
    api.simulator.state.knobs.device_list_fault = refusal
    fleet = api.simulator.fleet
    seed = fleet.by_name("seed-esn")
    truth = fleet.history(seed)

    body = await api.query(
        """
        query ($kind: DeviceIdentifierKind!, $identifier: String!) {
          a: device(kind: $kind, identifier: $identifier) {
            identifiers { kind identifier }
            provisioningHistory(first: 2) { edges { node { occurredAt } } }
          }
          b: device(kind: MDN, identifier: "5348152777") { identifiers { kind identifier } }
          x: device(kind: IMEI, identifier: "000000000000000") { identifiers { kind } }
        }
        """,
        ident(seed.primary),
    )

    data = body["data"]
    assert data["a"]["identifiers"] == [ident(seed.primary)]
    assert [e["node"]["occurredAt"] for e in data["a"]["provisioningHistory"]["edges"]] == [
        format_api_instant(e.occurred_at) for e in truth[:2]
    ]
    assert data["b"]["identifiers"] == [{"kind": "MDN", "identifier": "5348152777"}]
    assert data["x"] is None
    (warning,) = body["extensions"]["warnings"]
    assert warning["code"] == "DEVICE_LIST_UNAVAILABLE"
    assert warning["reason"] == "UPSTREAM_FAULT"
    assert warning["upstreamCode"] == upstream_code
    assert api.calls("GetDeviceList") == 1  # asked once, by both devices at once


async def test_device_history_needs_no_device_list_and_warns_of_nothing(api):
    api.simulator.state.knobs.device_list_fault = "access"
    device = api.simulator.fleet.by_name("seed-esn")

    body = await api.query(HISTORY, {**ident(device.primary), "first": 3})

    assert len(body["data"]["device"]["provisioningHistory"]["edges"]) == 3
    assert "warnings" not in body["extensions"]
    assert api.calls("GetDeviceList") == 0


async def test_the_device_list_itself_still_reports_its_fault(api):
    api.simulator.state.knobs.device_list_fault = "unsupported"

    body = await api.query(document("DeviceList"), {"first": 3}, expect_errors=True)

    (error,) = body["errors"]
    assert error["extensions"]["code"] == "UPSTREAM_FAULT"
    assert error["extensions"]["upstreamCode"] == "s:Client"


async def test_single_device_lookup_does_not_walk_the_device_list(api):
    # 10 devices a GetDeviceList page: the fleet's 310 devices take 31 pages, as 100,000
    # devices take 50 at the upstream's 2,000 a page.
    api.simulator.state.knobs.device_list_cap = 10
    last = api.simulator.fleet.devices[-1]

    body = await api.query(
        "query ($kind: DeviceIdentifierKind!, $identifier: String!) "
        "{ device(kind: $kind, identifier: $identifier) { id identifier { kind identifier } } }",
        ident(last.primary),
    )

    assert body["data"]["device"]["identifier"] == ident(last.primary)
    assert api.calls("GetDeviceList") == 0
    assert api.calls() == 1
    assert body["extensions"]["cost"]["upstreamCalls"] == 1


async def test_identifiers_read_the_device_list_once_it_is_needed(api):
    api.simulator.state.knobs.device_list_cap = 10
    fleet = api.simulator.fleet
    last, other = fleet.devices[-1], fleet.devices[-2]

    body = await api.query(OVERVIEW, ident(last.primary))

    assert body["data"]["device"]["identifiers"] == [ident(i) for i in last.identifiers]
    pages = -(-len(fleet.devices) // 10)
    assert api.calls("GetDeviceList") == pages
    probes = api.calls()

    # With the list cached, another device is found in it: no probe, all identifiers.
    body = await api.query(
        "query ($kind: DeviceIdentifierKind!, $identifier: String!) "
        "{ device(kind: $kind, identifier: $identifier) { identifiers { kind identifier } } }",
        ident(other.identifiers[-1]),
    )

    assert body["data"]["device"]["identifiers"] == [ident(i) for i in other.identifiers]
    assert api.calls("GetDeviceList") == pages
    assert api.calls() == probes
    assert body["extensions"]["cost"] == {"upstreamCalls": 0, "cacheHits": pages}
