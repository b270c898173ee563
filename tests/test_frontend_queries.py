"""The frontend's queries (tests/queries/*.graphql), answered and snapshotted."""

import pytest
from support import document
from syrupy.extensions.json import JSONSnapshotExtension


@pytest.fixture
def snapshot_json(snapshot):
    return snapshot.use_extension(JSONSnapshotExtension)


def scrub(value, names: dict[str, str] | None = None):
    """Cursors as stable placeholders (they sign the range end, which moves with time)."""
    names = {} if names is None else names
    if isinstance(value, dict):
        return {
            k: (
                names.setdefault(v, f"<cursor {len(names) + 1}>")
                if k in ("cursor", "startCursor", "endCursor") and v
                else scrub(v, names)
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [scrub(v, names) for v in value]
    return value


SEED_MEID = {"kind": "MEID", "identifier": "54689785258599"}


@pytest.mark.parametrize(
    ("name", "variables"),
    [
        pytest.param(
            "DeviceHistory",
            {**SEED_MEID, "first": 5, "occurredAfter": "2017-01-02"},
            id="history-first-page",
        ),
        pytest.param(
            "DeviceHistory",
            {**SEED_MEID, "first": 3, "filter": {"eventTypes": ["Deactivate"]}},
            id="history-filtered",
        ),
        pytest.param("LatestEvents", {**SEED_MEID, "last": 4}, id="latest-events"),
        pytest.param(
            "HistoryCount", {**SEED_MEID, "filter": {"statuses": ["Failure"]}}, id="failure-count"
        ),
        pytest.param("DeviceOverview", {"kind": "ESN", "identifier": "09123456123"}, id="overview"),
        pytest.param(
            "DeviceOverview",
            {"kind": "IMEI", "identifier": "000000000000000"},
            id="overview-unknown-device",
        ),
        pytest.param("DeviceList", {"first": 3}, id="device-list"),
        pytest.param("NodeDevice", {"id": "RGV2aWNlOm1laWQ6NTQ2ODk3ODUyNTg1OTk"}, id="node"),
    ],
)
async def test_frontend_query(api, snapshot_json, name, variables):
    body = await api.query(document(name), variables)
    assert scrub(body) == snapshot_json
