"""GraphiQL as a developer meets it in a browser (Debian's chromium, headless): the page
of `make serve` loads everything from the service itself, runs a history query with the
development token, and shows a recipe creation arrive over its WebSocket. The files
themselves: open to all, kept by browsers for a year, under URLs that change with them.

GRAPHIQL_SCREENSHOT=docs/graphiql.png makes the run save what the browser showed there."""

import json
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
from playwright.async_api import Page, Route, WebSocket, async_playwright, expect
from support import CREATE, WAIT_S, document, full_input

from server import development
from server.development import ASSETS, ASSETS_MOUNT
from server.testing import authorization, post_graphql, serving_service
from soap.simulator.fleet import Fleet
from soap.simulator.server import Simulator

CHROMIUM = Path("/usr/bin/chromium")
HISTORY = document("HistoryCount")
DEVICE = {"kind": "ESN", "identifier": "09123456123"}
EXAMPLES = sorted(path.stem for path in (Path(__file__).parent / "queries").glob("*.graphql"))
A_YEAR = "public, max-age=31536000, immutable"

expect.set_options(timeout=WAIT_S * 1000)


def require_chromium() -> None:
    """Skips without Debian's chromium, unless REQUIRE_SERVICES=1 makes that a failure."""
    if CHROMIUM.exists():
        return
    message = f"no browser at {CHROMIUM} (apt-get install chromium)"
    if os.environ.get("REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class Developer:
    base_url: str
    token: str

    async def query(self, query: str, variables: dict) -> dict:
        async with httpx.AsyncClient(timeout=WAIT_S) as http:
            body = await post_graphql(
                http, f"{self.base_url}/graphql", query, variables, authorization(self.token)
            )
        assert "errors" not in body, body["errors"]
        return body["data"]

    async def create_recipe(self, **changes: object) -> str:
        """The id of the creation's event."""
        data = await self.query(CREATE, {"input": full_input(**changes)})
        event_id: str = data["createProvisioningRecipe"]["event"]["id"]
        return event_id


@pytest.fixture
async def developer(tmp_path: Path) -> AsyncIterator[Developer]:
    """`make serve`: the service with its simulator and its development token."""
    assert (ASSETS / "graphiql.min.js").exists(), "GraphiQL's files are missing: make assets"
    with serving_service(
        Simulator(Fleet()),
        database_url=f"sqlite+aiosqlite:///{tmp_path}/provgraph.db",
        auth_dev_token=True,
    ) as (base, app):
        async with httpx.AsyncClient(timeout=WAIT_S) as http:
            await http.get(f"{base}/healthz")  # answered once the start is done
        yield Developer(base, app.state.services.authenticator.development_token)


@dataclass
class Visit:
    page: Page
    elsewhere: list[str] = field(default_factory=list)
    """Requests to anywhere but the service, which the browser was kept from making."""
    sockets: list[str] = field(default_factory=list)
    sent: list[str | bytes] = field(default_factory=list)
    """Every WebSocket frame the page sent."""

    def opened(self, socket: WebSocket) -> None:
        self.sockets.append(socket.url)
        socket.on("framesent", lambda payload: self.sent.append(payload))


@asynccontextmanager
async def browsing(base_url: str) -> AsyncIterator[Visit]:
    """A fresh headless Chromium page that goes nowhere but ``base_url``."""
    netloc = urlsplit(base_url).netloc
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            page = await browser.new_page(viewport={"width": 1440, "height": 900})
            page.set_default_timeout(WAIT_S * 1000)
            visit = Visit(page)

            async def local_only(route: Route) -> None:
                if urlsplit(route.request.url).netloc == netloc:
                    await route.continue_()
                else:
                    visit.elsewhere.append(route.request.url)
                    await route.abort()

            await page.route("**/*", local_only)
            page.on("websocket", visit.opened)
            yield visit
        finally:
            await browser.close()


def tab(page: Page, name: str):
    return page.locator(".graphiql-tab-button", has_text=name)


def result(page: Page):
    return page.locator(".result-window")


async def run(page: Page) -> None:
    await page.locator(".graphiql-execute-button").click()


async def type_variables(page: Page, variables: dict) -> None:
    await page.locator(".graphiql-editor-tool .graphiql-editor:not(.hidden)").click()
    await page.keyboard.press("ControlOrMeta+A")
    # Pasted, as it were: typed, each bracket and quote would get a closing one added.
    await page.keyboard.insert_text(json.dumps(variables))


async def test_graphiql_queries_and_subscribes_from_this_service_alone(developer):
    require_chromium()
    history = await developer.query(HISTORY, DEVICE)
    total = history["device"]["provisioningHistory"]["totalCount"]
    assert total > 0
    first = await developer.create_recipe()

    async with browsing(developer.base_url) as visit:
        page = visit.page
        address = urlencode({"q": HISTORY, "variables": json.dumps(DEVICE)})
        await page.goto(f"{developer.base_url}/graphql?{address}")
        await expect(page.locator(".graphiql-container")).to_be_visible()
        # The address's query, then the frontend's documents, each in a tab of its own.
        await expect(page.locator(".graphiql-tab-button")).to_have_text(["HistoryCount", *EXAMPLES])
        await page.get_by_role("button", name="Headers", exact=True).click()
        await expect(page.locator(".graphiql-editor-tool")).to_contain_text(
            f"Bearer {developer.token}"
        )

        await run(page)
        await expect(result(page)).to_contain_text(f'"totalCount": {total}')

        await tab(page, "RecipeCreated").click()
        await page.get_by_role("button", name="Variables", exact=True).click()
        await type_variables(page, {"after": first})
        await run(page)
        second = await developer.create_recipe(serialNumber="SN-2")
        await expect(result(page)).to_contain_text(f'"id": "{second}"')
        if screenshot := os.environ.get("GRAPHIQL_SCREENSHOT"):
            await page.screenshot(path=screenshot)

    assert visit.elsewhere == []
    port = urlsplit(developer.base_url).port
    assert set(visit.sockets) == {f"ws://127.0.0.1:{port}/graphql"}
    frames = [json.loads(frame) for frame in visit.sent]
    (init,) = [frame for frame in frames if frame["type"] == "connection_init"]
    assert init["payload"]["Authorization"] == f"Bearer {developer.token}"


async def test_graphiql_says_why_when_its_files_are_missing(developer):
    require_chromium()
    async with browsing(developer.base_url) as visit:
        # Newer routes are asked first: the service's files all answer 404.
        await visit.page.route(f"**{ASSETS_MOUNT}/**", lambda route: route.fulfill(status=404))
        await visit.page.goto(f"{developer.base_url}/graphql")
        await expect(visit.page.locator("#missing")).to_be_visible()
        await expect(visit.page.locator("#missing")).to_contain_text("make assets")
        await expect(visit.page.locator("#graphiql")).to_be_hidden()  # no "Loading…"
    assert visit.elsewhere == []


async def test_graphiql_files_are_open_and_kept_for_a_year(developer):
    async with httpx.AsyncClient(timeout=WAIT_S) as http:
        page = await http.get(f"{developer.base_url}/graphql", headers={"accept": "text/html"})
        urls = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        files = [url for url in urls if url.startswith(f"{ASSETS_MOUNT}/")]
        assert sorted(set(urls) - set(files)) == ["data:,"]  # the icon: none
        assert len(files) == 6
        for url in files:
            served = await http.get(f"{developer.base_url}{url}")  # no credential
            assert served.status_code == 200, url
            assert served.headers["cache-control"] == A_YEAR
        missing = await http.get(f"{developer.base_url}{ASSETS_MOUNT}/missing.js")
    assert missing.status_code == 404
    assert missing.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"


async def test_the_files_urls_change_with_the_files(developer, tmp_path, monkeypatch):
    """Browsers keep the files for a year: new ones must come under new URLs."""
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "graphiql.min.js").write_text("// one release")
    monkeypatch.setattr(development, "ASSETS", assets)
    first = await versions(developer)
    (assets / "graphiql.min.js").write_text("// the next release")
    second = await versions(developer)
    assert len(first) == len(second) == 1
    assert first != second


async def versions(developer: Developer) -> set[str]:
    """The versions that the URLs of GraphiQL's page carry."""
    async with httpx.AsyncClient(timeout=WAIT_S) as http:
        page = await http.get(f"{developer.base_url}/graphql", headers={"accept": "text/html"})
    return set(re.findall(r"\?v=(\w+)", page.text))
