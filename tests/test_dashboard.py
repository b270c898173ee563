"""The reporting dashboard (/dashboard) as a fleet operator meets it in a browser (Debian's
chromium, headless), on the service with its simulator: a whole-account report drawn with
the GraphQL report's totals, a report job watched to its end, a device's timeline, the
live feed's recent events and each new one once (and one made while the feed was cut
off, after it reconnects), and what the page says when the token will not do. Nothing it loads comes
from anywhere but the service.

DASHBOARD_SCREENSHOTS=docs makes the run save what the browser showed, as
docs/dashboard-*.png."""

import csv
import io
import json
import os
import re
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import httpx
import pytest
from playwright.async_api import Page, Route, WebSocketRoute, expect
from support import AUTH_SETTINGS, WAIT_S, bearer, document, full_input
from test_browser import browsing, require_chromium

from server import dashboard
from server.testing import authorization, post_graphql, serving_service
from soap.simulator.fleet import Fleet
from soap.simulator.server import Simulator

REPORT = document("DashboardReport")
TIMELINE = document("DashboardDeviceTimeline")
CREATE = document("CreateRecipe")
UPDATE = document("UpdateRecipeStatus")
RECENT = document("DashboardRecentRecipeEvents")
SEED_MEID = {"kind": "MEID", "identifier": "54689785258599"}
# Two years of every device of a small account, by month (in Berlin), event type and
# status: the page turns the form's days into the instants of their midnights there.
ZONE = ZoneInfo("Europe/Berlin")
FORM = {"from": "2016-01-01", "to": "2017-12-31", "zone": ZONE.key, "bucket": "MONTH"}
INPUT = {
    "occurredAfter": "2016-01-01T00:00:00+01:00",
    "occurredBefore": "2017-12-31T23:59:59.9999999+01:00",
    "groupBy": ["EVENT_TYPE", "STATUS"],
    "bucket": "MONTH",
    "timeZone": ZONE.key,
}

expect.set_options(timeout=WAIT_S * 1000)


@dataclass
class Service:
    base_url: str
    token: str
    """The development token, which the page gets on this host."""
    simulator: Simulator

    async def graphql(self, query: str, variables: dict, token: str | None = None) -> dict:
        async with httpx.AsyncClient(timeout=WAIT_S) as http:
            body = await post_graphql(
                http,
                f"{self.base_url}/graphql",
                query,
                variables,
                authorization(token or self.token),
            )
        assert "errors" not in body, body["errors"]
        return body

    async def create_recipe(self, **changes: object) -> str:
        """The id of the creation's event."""
        body = await self.graphql(CREATE, {"input": full_input(**changes)})
        event_id: str = body["data"]["createProvisioningRecipe"]["event"]["id"]
        return event_id


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    """`make serve` over a small account: the simulator, the development token, and the
    tests' identity provider (whose expired tokens the page must explain)."""
    assert (dashboard.ASSETS / "chart.umd.min.js").exists(), "the files are missing: make assets"
    simulator = Simulator(Fleet(ordinary=40))
    with serving_service(
        simulator,
        database_url=f"sqlite+aiosqlite:///{tmp_path}/provgraph.db",
        auth_dev_token=True,
        **AUTH_SETTINGS,
    ) as (base, app):
        async with httpx.AsyncClient(timeout=WAIT_S) as http:
            await http.get(f"{base}/healthz")  # answered once the start is done
        yield Service(base, app.state.services.authenticator.development_token, simulator)


def screenshot(name: str) -> str | None:
    """Where to save the screenshot ``name``, when DASHBOARD_SCREENSHOTS asks for them."""
    directory = os.environ.get("DASHBOARD_SCREENSHOTS")
    return str(Path(directory) / f"dashboard-{name}.png") if directory else None


async def save(page: Page, name: str, *, full_page: bool = False) -> None:
    if path := screenshot(name):
        await page.screenshot(path=path, full_page=full_page)


async def fill_report(page: Page) -> None:
    await page.get_by_label("From", exact=True).fill(FORM["from"])
    await page.get_by_label("To", exact=True).fill(FORM["to"])
    await page.get_by_label("Time zone").fill(FORM["zone"])
    await page.get_by_label("Bucket").select_option(FORM["bucket"])
    await page.get_by_label("Group by (stacks the chart)").select_option("EVENT_TYPE")
    await page.get_by_label("Then by").select_option("STATUS")


async def chart_data(page: Page) -> dict:
    """What the chart draws: its labels and each series' values (Chart.js's own record)."""
    data: dict = await page.evaluate(
        """() => {
            const chart = Chart.getChart(document.getElementById("report-chart"));
            return {
                labels: chart.data.labels,
                series: Object.fromEntries(chart.data.datasets.map((d) => [d.label, d.data])),
            };
        }"""
    )
    return data


def by_month_and_type(report: dict) -> tuple[Counter, Counter]:
    """The GraphQL report's counts by month (as the chart labels it) and by event type."""
    months: Counter = Counter()
    types: Counter = Counter()
    for row in report["rows"]:
        start = datetime.fromisoformat(row["key"]["bucketStart"]).astimezone(ZONE)
        months[start.strftime("%Y-%m")] += row["count"]
        types[row["key"]["eventType"]] += row["count"]
    return months, types


def fact(page: Page, name: str):
    return page.locator(f'[data-fact="{name}"] dd')


async def test_the_dashboard_loads_from_this_service_alone(service):
    require_chromium()
    async with browsing(service.base_url) as visit:
        page = visit.page
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        # What the browser refused to do (the page's content security policy) or failed at.
        complaints: list[str] = []
        page.on("console", lambda m: complaints.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda error: complaints.append(str(error)))
        response = await page.goto(f"{service.base_url}/dashboard")
        assert response is not None
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert response.headers["cache-control"] == "no-store"
        await expect(page.get_by_role("tab", name="Fleet report")).to_have_attribute(
            "aria-selected", "true"
        )
        await expect(page.locator("#token-state")).to_contain_text("development token")
        # Keyboard: the arrows move between the sections, each opened as it is reached.
        await page.get_by_role("tab", name="Fleet report").focus()
        await page.keyboard.press("ArrowRight")
        await expect(page.get_by_role("tab", name="Device")).to_be_focused()
        await expect(page.get_by_role("tabpanel", name="Device")).to_be_visible()
        await page.keyboard.press("End")
        await expect(page.get_by_role("tabpanel", name="Live activity")).to_be_visible()
        await expect(page.locator("#live-state")).to_contain_text("Live")
        await page.keyboard.press("Home")
        await expect(page.get_by_role("tabpanel", name="Fleet report")).to_be_visible()

    assert visit.elsewhere == []
    assert complaints == []
    netloc = urlsplit(service.base_url).netloc
    assert {urlsplit(url).netloc for url in requested} == {netloc}
    assert {urlsplit(url).path for url in requested} >= {
        "/dashboard",
        f"{dashboard.ASSETS_MOUNT}/chart.umd.min.js",
        f"{dashboard.ASSETS_MOUNT}/graphql-ws.min.js",
        f"{dashboard.ASSETS_MOUNT}/dashboard.js",
        "/graphql",
    }


async def test_the_page_sends_only_the_frontends_documents(service):
    """The page's documents are tests/queries/Dashboard*, as the manifest has them."""
    queries = Path(__file__).parent / "queries"
    files = {path.stem: path.read_text() for path in queries.glob("Dashboard*.graphql")}
    assert dashboard.documents() == files
    async with httpx.AsyncClient(timeout=WAIT_S) as http:
        page = (await http.get(f"{service.base_url}/dashboard")).text
    embedded = re.search(r'<script id="documents" type="application/json">(.*?)</script>', page)
    assert embedded is not None
    assert json.loads(embedded[1]) == files
    source = (dashboard.ASSETS / "dashboard.js").read_text()
    assert not re.search(r"\b(query|mutation|subscription)\s+\w+\s*[({]", source)


async def test_a_whole_account_report_draws_the_graphql_reports_totals(service, tmp_path):
    require_chromium()
    async with browsing(service.base_url) as visit:
        page = visit.page
        complaints: list[str] = []
        page.on("console", lambda m: complaints.append(m.text) if m.type == "error" else None)
        await page.goto(f"{service.base_url}/dashboard#report")
        await fill_report(page)
        await page.get_by_role("button", name="Run report").click()
        await expect(page.locator("#report-result")).to_be_visible()
        # The same report over GraphQL, from the cache the page's report filled.
        body = await service.graphql(REPORT, {"input": INPUT})
        expected = body["data"]["provisioningReport"]
        months, types = by_month_and_type(expected)
        assert len(types) > 1
        await expect(fact(page, "Events")).to_have_text(f"{expected['totalEvents']:,}")
        drawn = await chart_data(page)
        await expect(fact(page, "Devices read")).to_have_text(str(expected["devicesScanned"]))
        await expect(fact(page, "Upstream calls")).to_have_text(re.compile(r"^\d[\d,]*$"))
        await save(page, "report", full_page=True)

        # The table sorts by a column's heading, with the keyboard too.
        heading = page.get_by_role("button", name="Event type")
        await heading.focus()
        await page.keyboard.press("Enter")
        await expect(page.locator("#report-table th").first).to_have_attribute(
            "aria-sort", "ascending"
        )
        first_types = await page.locator("#report-table tbody tr td:first-child").all_inner_texts()
        assert first_types == sorted(first_types)

        async with page.expect_download() as download:
            await page.get_by_role("button", name="Download CSV").click()
        saved = tmp_path / "report.csv"
        await (await download.value).save_as(saved)

    assert visit.elsewhere == []
    assert complaints == []  # Chart.js draws within the page's content security policy
    assert sum(sum(values) for values in drawn["series"].values()) == expected["totalEvents"]
    assert drawn["labels"] == sorted(months)
    per_month = [sum(column) for column in zip(*drawn["series"].values(), strict=True)]
    assert dict(zip(drawn["labels"], per_month, strict=True)) == dict(months)
    assert {name: sum(values) for name, values in drawn["series"].items()} == dict(types)
    header, *rows = csv.reader(io.StringIO(saved.read_text(), newline=""))
    assert header[:4] == ["eventType", "status", "bucketStart", "count"]
    assert sum(int(row[3]) for row in rows) == expected["totalEvents"]


async def test_a_report_job_shows_its_progress_to_the_end(service, tmp_path):
    require_chromium()
    async with browsing(service.base_url) as visit:
        page = visit.page
        await page.goto(f"{service.base_url}/dashboard#report")
        await fill_report(page)
        await page.get_by_role("button", name="Run as a job").click()
        job = page.locator("#job")
        await expect(job).to_have_attribute("data-state", "SUCCEEDED")
        await expect(page.locator("#job-state")).to_contain_text("Succeeded")
        # The same report computed in a request, from the cache the job filled.
        body = await service.graphql(REPORT, {"input": INPUT})
        expected = body["data"]["provisioningReport"]
        await expect(fact(page, "Events")).to_have_text(f"{expected['totalEvents']:,}")
        drawn = await chart_data(page)
        progress = page.locator("#job-progress")
        assert await progress.evaluate("(bar) => bar.value === bar.max")
        steps = await page.locator("#job-history li").evaluate_all(
            "(items) => items.map((item) => [+item.dataset.done, +item.dataset.total])"
        )
        await expect(page.get_by_role("button", name="Cancel job")).to_be_hidden()
        await save(page, "job", full_page=True)
        # The job's own CSV (by its id): the same counts.
        async with page.expect_download() as download:
            await page.get_by_role("button", name="Download CSV").click()
        saved = tmp_path / "job.csv"
        await (await download.value).save_as(saved)
    assert visit.elsewhere == []
    _, *rows = csv.reader(io.StringIO(saved.read_text(), newline=""))
    assert sum(int(row[3]) for row in rows) == expected["totalEvents"]
    devices = expected["devicesScanned"] + len(expected["failures"])
    assert steps[-1] == [devices, devices]
    assert [done for done, _ in steps] == sorted(done for done, _ in steps)
    assert sum(sum(values) for values in drawn["series"].values()) == expected["totalEvents"]


async def test_a_report_job_can_be_cancelled(service):
    require_chromium()
    # Every history read hangs: the job runs until it is cancelled.
    service.simulator.state.fail_next("hang", times=1000, operation="GetDeviceProvisioningHistory")
    async with browsing(service.base_url) as visit:
        page = visit.page
        await page.goto(f"{service.base_url}/dashboard#report")
        await fill_report(page)
        await page.get_by_role("button", name="Run as a job").click()
        await expect(page.locator("#job")).to_have_attribute("data-state", "RUNNING")
        await page.get_by_role("button", name="Cancel job").click()
        await expect(page.locator("#job")).to_have_attribute("data-state", "CANCELLED")
        await expect(page.get_by_role("alert")).to_contain_text("The report job was cancelled")
        await expect(page.locator("#report-result")).to_be_hidden()
    assert visit.elsewhere == []
    service.simulator.state.clear_failures()


async def test_the_page_says_when_the_upstream_is_down(service):
    require_chromium()
    service.simulator.state.knobs.failure_rate = 1.0
    service.simulator.state.knobs.failure_mix = "http503"
    async with browsing(service.base_url) as visit:
        page = visit.page
        await page.goto(f"{service.base_url}/dashboard#report")
        await fill_report(page)
        await page.get_by_role("button", name="Run report").click()
        alert = page.get_by_role("alert")
        await expect(alert).to_contain_text("The upstream provisioning service (UWS)")
        await expect(alert).to_contain_text("try again later")

        # Named devices: the report stands, each device's failure listed with its code.
        await page.get_by_label("These devices").check()
        await page.get_by_label("Device list").fill("ESN:09123456123\nMEID:54689785258599")
        await page.get_by_role("button", name="Run report").click()
        await expect(alert).to_contain_text("No device of this report could be read")
        failures = page.locator("#report-failures-table tbody tr")
        await expect(failures).to_have_count(2)
        await expect(failures.first).to_contain_text("UPSTREAM_")
    assert visit.elsewhere == []


async def test_a_devices_timeline_is_newest_first_and_pages_back(service):
    require_chromium()
    variables = {**SEED_MEID, "last": 50, "filter": {"statuses": ["Success"]}}
    newest = (await service.graphql(TIMELINE, variables))["data"]["device"]
    instants = [edge["node"]["occurredAt"] for edge in newest["provisioningHistory"]["edges"]]
    uid = (await service.graphql(CREATE, {"input": full_input(device=SEED_MEID)}))["data"][
        "createProvisioningRecipe"
    ]["recipe"]["uid"]
    async with browsing(service.base_url) as visit:
        page = visit.page
        await page.goto(f"{service.base_url}/dashboard#device")
        await page.get_by_label("Kind", exact=True).select_option("MEID")
        await page.get_by_label("Identifier", exact=True).fill(SEED_MEID["identifier"])
        await page.get_by_label("Status", exact=True).select_option("Success")
        await page.get_by_role("button", name="Show device").click()
        times = page.locator("#timeline time")
        await expect(times).to_have_count(25)
        await expect(page.locator("#recipes")).to_contain_text(uid)
        await save(page, "device")
        await page.get_by_role("button", name="Older events").click()
        await expect(times).to_have_count(50)
        shown = await times.evaluate_all("(items) => items.map((item) => item.dateTime)")
        await expect(page.locator("#timeline .failure")).to_have_count(0)
    assert visit.elsewhere == []
    assert shown == instants[::-1]


async def test_the_live_feed_shows_recent_events_then_each_new_one_once(service):
    """Events from before the page opened are shown, with the time the service recorded
    them; one made after the page read them but before it subscribed is not lost; one
    made once it listens arrives; none twice."""
    require_chromium()
    first = await service.create_recipe(serialNumber="SN-FIRST", deviceName="Van 3")
    between: list[str] = []

    async def recipe_after_the_read(route: Route) -> None:
        """Answers the page's read of the recent events only once another recipe is made:
        the page subscribes after that, from where the read left the event log."""
        request = route.request
        if (
            request.method != "POST"
            or request.post_data_json.get("operationName") != "DashboardRecentRecipeEvents"
        ):
            await route.fallback()
            return
        response = await route.fetch()
        between.append(await service.create_recipe(serialNumber="SN-BETWEEN"))
        await route.fulfill(response=response)

    async with browsing(service.base_url) as visit:
        page = visit.page
        await page.route(re.compile(r".*/graphql$"), recipe_after_the_read)
        await page.goto(f"{service.base_url}/dashboard#live")
        earlier = page.locator(f'#live-feed li[data-event-id="{first}"]')
        await expect(earlier).to_contain_text("Recipe created")
        await expect(earlier).to_contain_text("Van 3")
        await expect(page.locator("#live-empty")).to_be_hidden()
        await expect(page.locator(f'#live-feed li[data-event-id="{between[0]}"]')).to_be_visible()
        second = await service.create_recipe(serialNumber="SN-SECOND", deviceName="Truck 12")
        item = page.locator(f'#live-feed li[data-event-id="{second}"]')
        await expect(item).to_contain_text("Recipe created")
        await expect(item).to_contain_text("Truck 12")
        uid = await item.get_attribute("data-uid")
        failed = {"uid": uid, "status": "FAILED", "errorMessage": "SIM not found"}
        changed = await service.graphql(UPDATE, {"input": failed})
        event_id = changed["data"]["updateProvisioningRecipeStatus"]["event"]["id"]
        status = page.locator(f'#live-feed li[data-event-id="{event_id}"]')
        await expect(status).to_contain_text("Status changed")
        await expect(status).to_contain_text("SIM not found")
        await save(page, "live")
        shown = await page.locator("#live-feed li").evaluate_all(
            "(items) => items.map((item) => [item.dataset.eventId, "
            "item.querySelector('time').getAttribute('datetime')])"
        )
    assert visit.elsewhere == []
    assert [event for event, _ in shown] == [event_id, second, between[0], first]  # newest on top
    recent = await service.graphql(RECENT, {"last": 10})
    recorded = {
        edge["node"]["id"]: edge["node"]["occurredAt"]
        for edge in recent["data"]["provisioningRecipeEvents"]["edges"]
    }
    assert dict(shown) == recorded


async def test_the_live_feed_resumes_after_the_last_event_it_showed(service):
    require_chromium()
    first = await service.create_recipe(serialNumber="SN-1")
    sockets: list[WebSocketRoute] = []
    subscribed: list[dict] = []

    async def through(socket: WebSocketRoute) -> None:
        """The page's socket, passed on to the service; kept, to cut it off."""
        server = socket.connect_to_server()

        def sent(message: str | bytes) -> None:
            frame = json.loads(message)
            if frame["type"] == "subscribe":
                subscribed.append(frame["payload"]["variables"])
            server.send(message)

        socket.on_message(sent)
        sockets.append(socket)

    async with browsing(service.base_url) as visit:
        page = visit.page
        await page.route_web_socket(re.compile(r".*/graphql$"), through)
        await page.goto(f"{service.base_url}/dashboard?after={first}#live")
        second = await service.create_recipe(serialNumber="SN-2")
        await expect(page.locator(f'#live-feed li[data-event-id="{second}"]')).to_be_visible()
        await sockets[0].close(code=1012, reason="Service restart")
        await expect(page.locator("#live-state")).to_contain_text(f"after event {second}")
        third = await service.create_recipe(serialNumber="SN-3")  # while cut off
        await expect(page.locator(f'#live-feed li[data-event-id="{third}"]')).to_be_visible()
        shown = await page.locator("#live-feed li").evaluate_all(
            "(items) => items.map((item) => item.dataset.eventId)"
        )
    assert visit.elsewhere == []
    assert subscribed == [{"after": first}, {"after": second}]
    assert shown == [third, second]


async def test_the_page_says_what_is_wrong_with_the_token(service):
    require_chromium()
    expired = bearer(exp=int(time.time()) - 60)
    async with browsing(service.base_url) as visit:
        page = visit.page
        await page.goto(f"{service.base_url}/dashboard#report")
        await expect(page.locator("#token-state")).to_contain_text("development token")
        await page.get_by_label("API token").fill(expired)
        await page.get_by_role("button", name="Use token").click()
        await expect(page.locator("#token-state")).to_contain_text("token you entered")
        await fill_report(page)
        await page.get_by_role("button", name="Run report").click()
        message = page.get_by_role("alert")
        await expect(message).to_contain_text("Your token has expired.")
        await expect(message).to_contain_text("Paste a new token")
        await expect(page.locator("#report-result")).to_be_hidden()
        await save(page, "expired")
        # The live feed too: the socket's connection_init carries the token.
        await page.get_by_role("tab", name="Live activity").click()
        await expect(page.locator("#live-message")).to_contain_text("Your token has expired.")
        await expect(page.locator("#live-state")).to_have_text("Stopped.")

        # A fresh token: the feed starts again, and the same report runs.
        await page.get_by_label("API token").fill(bearer())
        await page.get_by_role("button", name="Use token").click()
        await expect(page.locator("#live-state")).to_contain_text("Live")
        await expect(page.locator("#live-message")).to_be_hidden()
        await page.get_by_role("tab", name="Fleet report").click()
        await page.get_by_role("button", name="Run report").click()
        await expect(fact(page, "Events")).to_be_visible()
        await expect(page.locator("#report-message")).to_be_hidden()
    assert visit.elsewhere == []


async def test_the_page_says_when_there_is_no_data_or_no_permission(service):
    require_chromium()
    reader = bearer(scopes=["history:read"])
    async with browsing(service.base_url) as visit:
        page = visit.page
        await page.goto(f"{service.base_url}/dashboard#report")
        await fill_report(page)
        await page.get_by_label("To", exact=True).fill("2016-01-01")
        await page.get_by_label("From", exact=True).fill("2016-01-01")
        await page.get_by_label("These devices").check()
        await page.get_by_label("Device list").fill("ESN:09123456123")
        await page.get_by_role("button", name="Run report").click()
        await expect(page.get_by_role("alert")).to_contain_text("No events in this range")

        await page.get_by_label("API token").fill(reader)
        await page.get_by_role("button", name="Use token").click()
        await page.get_by_role("button", name="Run report").click()
        await expect(page.get_by_role("alert")).to_contain_text("no permission")
        await expect(page.get_by_role("alert")).to_contain_text("reports:read")
    assert visit.elsewhere == []


async def test_the_dashboard_runs_where_only_trusted_documents_do(tmp_path):
    """PERSISTED_QUERIES=only: the page's documents are the manifest's, so they run."""
    require_chromium()
    with serving_service(
        Simulator(Fleet(ordinary=0)),
        database_url=f"sqlite+aiosqlite:///{tmp_path}/provgraph.db",
        auth_dev_token=True,
        persisted_queries="only",
    ) as (base, _):
        async with browsing(base) as visit:
            page = visit.page
            await page.goto(f"{base}/dashboard#device")
            await page.get_by_label("Identifier", exact=True).fill(SEED_MEID["identifier"])
            await page.get_by_role("button", name="Show device").click()
            await expect(page.locator("#timeline time")).to_have_count(25)
            await expect(page.locator("#recipes")).to_contain_text("No recipe")
            await page.get_by_role("tab", name="Live activity").click()
            await expect(page.locator("#live-state")).to_contain_text("Live")
        assert visit.elsewhere == []


async def test_the_page_says_why_when_its_files_are_missing(service):
    require_chromium()
    async with browsing(service.base_url) as visit:
        await visit.page.route(
            f"**{dashboard.ASSETS_MOUNT}/*.min.js*", lambda route: route.fulfill(status=404)
        )
        await visit.page.goto(f"{service.base_url}/dashboard")
        await expect(visit.page.locator("#missing")).to_be_visible()
        await expect(visit.page.locator("#missing")).to_contain_text("make assets")
    assert visit.elsewhere == []


async def test_the_page_carries_the_development_token_for_this_host_only(service):
    """GraphiQL's rule (server/development.py): a loopback peer and Host, no proxy."""

    async def authorization_in_page(headers: dict[str, str]) -> object:
        async with httpx.AsyncClient(timeout=WAIT_S) as http:
            page = (await http.get(f"{service.base_url}/dashboard", headers=headers)).text
        embedded = re.search(r'<script id="authorization" type="application/json">(.*?)<', page)
        assert embedded is not None
        return json.loads(embedded[1])

    assert await authorization_in_page({}) == f"Bearer {service.token}"
    assert await authorization_in_page({"Host": "rebind.example:8000"}) is None
    assert await authorization_in_page({"X-Forwarded-For": "203.0.113.9"}) is None


async def test_the_dashboards_files_are_open_and_kept_for_a_year(service):
    async with httpx.AsyncClient(timeout=WAIT_S) as http:
        page = await http.get(f"{service.base_url}/dashboard")  # no credential
        assert page.status_code == 200
        urls = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        files = [url for url in urls if url.startswith(f"{dashboard.ASSETS_MOUNT}/")]
        assert sorted(set(urls) - set(files)) == ["#main", "data:,"]
        assert len(files) == 4
        for url in files:
            served = await http.get(f"{service.base_url}{url}")
            assert served.status_code == 200, url
            assert served.headers["cache-control"] == "public, max-age=31536000, immutable"
