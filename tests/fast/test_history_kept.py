"""What a read of the history keeps of its windows for the next read of them
(``KnownWindow``: items, edges, cursors, completed dicts), and that it answers as a
fresh read would."""

from support import document, ident

from graph.schema import schema
from models.events import HistoryWindow, ProvisioningEvent
from models.instants import parse_instant
from resolvers.history import KnownWindows

HISTORY = document("DeviceHistory")
END = {"occurredBefore": "2026-06-01T00:00:00Z"}


def history_of(body: dict) -> dict:
    return body["data"]["device"]["provisioningHistory"]


async def read_all(api, device, first: int, **variables) -> list[dict]:
    """Every page of the device's history, forwards, as the client gets them."""
    pages, after = [], None
    while True:
        body = await api.query(
            HISTORY, {**ident(device), **END, **variables, "first": first, "after": after}
        )
        pages.append(history_of(body))
        if not pages[-1]["pageInfo"]["hasNextPage"]:
            return pages
        after = pages[-1]["pageInfo"]["endCursor"]


async def test_a_warm_read_answers_as_the_cold_one_cursors_included(api):
    # Events sharing a millisecond: cursors carry their ranks.
    device = api.simulator.fleet.by_name("boundary-millisecond")

    cold = await read_all(api, device, 137)
    calls = api.calls()
    warm = await read_all(api, device, 137)

    assert api.calls() == calls
    assert warm == cold
    assert len({edge["cursor"] for page in cold for edge in page["edges"]}) == sum(
        len(page["edges"]) for page in cold
    )


async def test_a_filtered_read_of_the_same_windows_has_cursors_of_its_own(api):
    device = api.simulator.fleet.by_name("twelve-thousand")
    everything = {"filter": {"statuses": ["Success", "Failure"]}}  # every event matches

    plain = await read_all(api, device, 500)
    filtered = await read_all(api, device, 500, **everything)

    nodes = [[edge["node"] for edge in page["edges"]] for page in plain]
    assert [[edge["node"] for edge in page["edges"]] for page in filtered] == nodes
    plain_cursors = {edge["cursor"] for page in plain for edge in page["edges"]}
    assert not plain_cursors & {edge["cursor"] for page in filtered for edge in page["edges"]}
    # Each read's cursors resume that read only (read_all resumed each by its own).
    body = await api.query(
        HISTORY,
        {**ident(device), **END, "first": 1, "after": filtered[0]["pageInfo"]["endCursor"]},
        expect_errors=True,
    )
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_the_same_page_twice_is_completed_once(api):
    device = api.simulator.fleet.by_name("twelve-thousand")
    variables = {**ident(device), **END, "first": 500}

    first, second = [
        await schema.execute(HISTORY, variable_values=variables, context_value=await api.context())
        for _ in range(2)
    ]

    edges = [result.data["device"]["provisioningHistory"]["edges"] for result in (first, second)]
    assert len(edges[0]) == 500
    # The very dicts of the first answer: its edges' cursors and completions were kept.
    assert all(a is b for a, b in zip(*edges, strict=True))


def made(n: int) -> HistoryWindow:
    at = parse_instant("2025-01-01T00:00:00Z")
    return HistoryWindow(
        tuple(
            ProvisioningEvent(at + i, "Success", None, "T", None, None, None, ()) for i in range(n)
        ),
        True,
    )


def test_known_windows_keep_the_most_recently_read_up_to_their_bound():
    known = KnownWindows(events=10)
    a, b, c = made(4), made(4), made(4)
    kept_a, kept_b = known.get(0, a, 9, None), known.get(0, b, 9, None)

    assert known.get(0, a, 9, None) is kept_a  # the same window object: kept; read last
    known.get(0, c, 9, None)  # 12 events: the least recently read (b) goes

    assert known.get(0, a, 9, None) is kept_a
    again = known.get(0, b, 9, None)
    assert again is not kept_b
    assert [item.event for item in again.items] == list(b.events)
    assert [item.at for item in again.items] == [item.at for item in kept_b.items]
