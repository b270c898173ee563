"""Devices: the account's device list as a connection, lookups, and global ids."""

from support import document

from graph.relay import global_id

DEVICE_LIST = document("DeviceList")
NODE = document("NodeDevice")


async def test_the_device_list_pages_without_gaps_or_overlaps(api):
    api.simulator.state.knobs.device_list_cap = 120
    fleet = api.simulator.fleet
    seen, after = [], None
    while True:
        connection = (await api.query(DEVICE_LIST, {"first": 50, "after": after}))["data"][
            "devices"
        ]
        seen += [e["node"]["identifier"]["identifier"] for e in connection["edges"]]
        if not connection["pageInfo"]["hasNextPage"]:
            break
        after = connection["pageInfo"]["endCursor"]
    assert seen == [d.primary.identifier for d in fleet.devices]
    assert api.calls("GetDeviceList") == 3  # 310 devices, 120 a call, each call once


async def test_a_listed_device_carries_all_its_identifiers(api):
    edge = (await api.query(DEVICE_LIST, {"first": 1}))["data"]["devices"]["edges"][0]
    assert edge["node"]["identifiers"] == [
        {"kind": "MEID", "identifier": "54689785258599"},
        {"kind": "MDN", "identifier": "5348152777"},
        {"kind": "MIN", "identifier": "5348152777"},
    ]


async def test_a_device_is_found_by_any_of_its_identifiers(api):
    body = await api.query(
        '{ device(kind: MDN, identifier: "5348152777") { identifier { kind identifier } '
        "identifiers { kind } } }"
    )
    device = body["data"]["device"]
    assert device["identifier"] == {"kind": "MDN", "identifier": "5348152777"}
    assert {i["kind"] for i in device["identifiers"]} == {"MEID", "MDN", "MIN"}


async def test_node_resolves_a_device_id(api):
    device_id = global_id("Device", "esn", "09123456123")
    body = await api.query(NODE, {"id": device_id})
    assert body["data"]["node"] == {
        "id": device_id,
        "__typename": "Device",
        "identifier": {"kind": "ESN", "identifier": "09123456123"},
    }


async def test_node_is_null_for_an_unknown_type_or_device(api):
    for node_id in (global_id("Recipe", "x"), global_id("Device", "imei", "000000000000000")):
        assert (await api.query(NODE, {"id": node_id}))["data"]["node"] is None


async def test_a_malformed_id_is_bad_user_input(api):
    body = await api.query(NODE, {"id": "%%%"}, expect_errors=True)
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_a_device_list_cursor_is_checked(api):
    body = await api.query(DEVICE_LIST, {"first": 5, "after": "bogus"}, expect_errors=True)
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_the_device_list_honours_the_page_bound(api):
    body = await api.query(DEVICE_LIST, {"first": 501}, expect_errors=True)
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert api.calls("GetDeviceList") == 0
