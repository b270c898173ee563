"""Whatever a client sends, the service answers without a server error.

Hypothesis drives the frontend's own documents (tests/queries) with variables drawn from
their types and far beyond them (NUL, lone surrogates, other scripts' digits, numbers
past 64 bits, offsets past a day, JSON nested past any parser's stack), the CSV exports'
query strings, and the subscriptions' ``after`` over a WebSocket. Every answer is below
500, and no GraphQL error in it is a masked INTERNAL_SERVER_ERROR.

Bounded for CI: one service for the module, a fixed number of examples, derandomized so
that a run is repeatable; NEVER_500_EXAMPLES widens it for a longer local hunt.
"""

import json
import os
from collections.abc import Iterator
from datetime import datetime
from functools import cache
from urllib.parse import quote

import httpx
import pytest
import websockets
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    build_schema,
    is_required_input_field,
    parse,
    type_from_ast,
)
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from support import CREATE, ORG, OTHER_ORG, QUERIES, Api, api_server, document, full_input
from websockets.sync.client import connect

from graph.schema import schema as app_schema
from models import recipe_events

SCALE = int(os.environ.get("NEVER_500_EXAMPLES", "0"))
SETTINGS = {
    "deadline": None,
    "derandomize": not SCALE,
    "suppress_health_check": list(HealthCheck),
}
WAIT_S = 30  # an upper bound for one answer, never a synchronisation
LEAKS = ("Traceback", 'File "', "sqlalchemy", "asyncpg", "lxml", "soap:Envelope", "Exception")

SCHEMA: GraphQLSchema = build_schema(app_schema.as_str())
DOCUMENTS = {path.stem: path.read_text() for path in sorted(QUERIES.glob("*.graphql"))}
SUBSCRIPTIONS = {
    name
    for name, source in DOCUMENTS.items()
    if any(
        isinstance(d, OperationDefinitionNode) and d.operation is OperationType.SUBSCRIPTION
        for d in parse(source).definitions
    )
}
# Devices with short histories, so that inputs that do reach the upstream stay cheap.
SMALL_DEVICES = ("seed-esn", "empty", "exactly-500")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    # Off: the limit would answer 429 long before the examples run out.
    yield from api_server(tmp_path_factory.mktemp("never500"), rate_limit="")


# --- text, numbers and instants: what a careless or hostile client sends -------------

ODD_TEXT = [
    "",
    " ",
    "\u00b2",  # superscript two: str.isdigit() says yes, int() says no
    "\u0661",  # Arabic-Indic one: int() reads 1
    "\u0663\u0664",
    "\U0001d7d9",  # mathematical double-struck one
    "9" * 5_000,
    str(2**63),
    str(2**63 - 1),
    str(2**64),
    "-1",
    "0",
    "1",
    "1e3",
    "0x10",
    "\x01\x7f",  # storable, but not in XML 1.0
    "\u202e",
    "/etc/passwd",
    "../../../etc/passwd",
    "Europe/Berlin",
    "UTC",
    "'; DROP TABLE provisioning_recipes; --",
    "<soap:Envelope/>",
    "]]>&amp;",
    "%s%n",
    ORG,
    OTHER_ORG,
]
# What no input can take, refused with the whole request.
UNSTORABLE = ["\x00", "SN\x00", "\ud800", "\udfff", "a\udbffb"]

STORABLE_TEXT = st.one_of(
    st.sampled_from(ODD_TEXT),
    st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=40),
    st.text("0123456789", min_size=1, max_size=25),
)
ANY_TEXT = st.one_of(
    STORABLE_TEXT,
    st.sampled_from(UNSTORABLE),
    st.text(st.characters(exclude_categories=()), max_size=40),  # NUL and surrogates too
)
INTS = st.one_of(
    st.integers(-5, 600),
    st.integers(-(2**70), 2**70),
    st.sampled_from([2**31, -(2**31) - 1, 2**63, 10**400]),
)
TWO = st.one_of(
    st.integers(0, 99).map("{:02d}".format),
    st.sampled_from(["\u0661\u0662", "\u00b2\u00b3", "0", "123", "+1"]),
)
YEARS = st.one_of(
    st.sampled_from(["2000", "2016", "2017", "2099", "2100", "9999", "0001", "0000"]),
    st.integers(0, 9999).map("{:04d}".format),
    st.just("\u0662\u0660\u0661\u0667"),
)
OFFSETS = st.one_of(
    st.sampled_from(["Z", "z", "", "+23:59", "-23:59", "+24:00", "+25:00", "-99:99", "+5"]),
    st.builds(lambda sign, h, m: f"{sign}{h}:{m}", st.sampled_from("+-"), TWO, TWO),
)
FRACTIONS = st.sampled_from(["", ".5", ".1234567", ".123456789", ".\u0661", "."])
INSTANTS = st.one_of(
    st.builds(
        lambda y, mo, d, h, mi, s, f, o: f"{y}-{mo}-{d}T{h}:{mi}:{s}{f}{o}",
        YEARS,
        TWO,
        TWO,
        TWO,
        TWO,
        TWO,
        FRACTIONS,
        OFFSETS,
    ),
    st.builds(lambda y, mo, d: f"{y}-{mo}-{d}", YEARS, TWO, TWO),
    st.sampled_from(
        ["2016-06-01T00:00:00Z", "9999-12-31T23:59:59.9999999Z", "0001-01-01T00:00:00Z"]
    ),
)
SCALARS = st.one_of(st.none(), st.booleans(), INTS, st.floats(allow_nan=False), ANY_TEXT)
ANY_JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ANY_TEXT, inner, max_size=3),
    max_leaves=8,
)


def _nest(value: object, depth: int, in_objects: bool) -> object:
    for _ in range(depth):
        value = {"v": value} if in_objects else [value]
    return value


ANYTHING = st.one_of(ANY_JSON, st.builds(_nest, ANY_JSON, st.integers(1, 80), st.booleans()))


@cache
def fleet_devices() -> tuple[tuple[str, str], ...]:
    """(KIND, identifier) of the small devices; the simulator's fleet comes from one seed."""
    from soap.simulator.fleet import Fleet

    fleet = Fleet()
    return tuple(
        (identifier.kind.upper(), identifier.identifier)
        for name in SMALL_DEVICES
        for identifier in fleet.by_name(name).identifiers
    )


DEVICES = st.sampled_from(fleet_devices())
REAL_INSTANTS = st.builds(
    lambda moment, offset: moment.isoformat(timespec="milliseconds") + offset,
    st.datetimes(datetime(2000, 1, 1), datetime(2030, 1, 1)),
    st.sampled_from(["Z", "+01:00", "-05:30", "+23:59", ""]),
)
# Realistic values for inputs of these names, so that examples get past the format
# checks to the upstream, the database, the cursors and the time zones.
NAMED = {
    "identifier": DEVICES.map(lambda device: device[1]),
    "kind": DEVICES.map(lambda device: device[0]),
    "organizationUid": st.sampled_from([ORG, OTHER_ORG]),
    "timeZone": st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Etc/GMT+14"]),
    "brand": st.sampled_from(["Acme", "Br\u00e4nd"]),
}
WORDS = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_:", max_size=20)


def for_type(graphql_type: GraphQLInputType, name: str, hostile: bool) -> st.SearchStrategy[object]:
    """Values of a GraphQL input type, mostly valid with odd ones among them. Hostile ones
    may also hold text no input can take, and now and then anything in the type's place;
    the others keep to it, so that they get as far as the resolvers."""
    if isinstance(graphql_type, GraphQLNonNull):
        return _typed(graphql_type.of_type, name, hostile)
    return st.none() | _typed(graphql_type, name, hostile)


def _typed(graphql_type: GraphQLInputType, name: str, hostile: bool) -> st.SearchStrategy[object]:
    text = ANY_TEXT if hostile else STORABLE_TEXT
    if isinstance(graphql_type, GraphQLList):
        inner = for_type(graphql_type.of_type, name, hostile)
        return st.lists(inner, max_size=4) | inner  # a single value coerces to a list
    if isinstance(graphql_type, GraphQLInputObjectType):
        fields = graphql_type.fields
        required = {
            key: for_type(field.type, key, hostile)
            for key, field in fields.items()
            if is_required_input_field(field)
        }
        optional = {
            key: for_type(field.type, key, hostile)
            for key, field in fields.items()
            if key not in required
        }
        typed = st.fixed_dictionaries(required, optional=optional)
        if graphql_type.name == "DeviceIdentifierInput":  # a kind and an identifier that match
            typed = DEVICES.map(lambda device: {"kind": device[0], "identifier": device[1]}) | typed
        return st.one_of(typed, typed, typed, ANYTHING) if hostile else typed
    valid: st.SearchStrategy[object]
    odd: st.SearchStrategy[object]
    if isinstance(graphql_type, GraphQLEnumType):
        valid, odd = st.sampled_from(list(graphql_type.values)), text
    else:
        valid, odd = {
            "Int": (st.integers(0, 100), INTS),
            "Float": (st.floats(0, 100), st.floats()),
            "Boolean": (st.booleans(), text),
            "DateTime": (REAL_INSTANTS, INSTANTS | text),
            "JSON": (ANY_JSON, ANY_JSON),
        }.get(graphql_type.name, (NAMED.get(name, WORDS), text))
    # Mostly valid: one odd value among a few leaves still gets its request refused.
    return st.one_of(valid, valid, odd, ANYTHING) if hostile else st.one_of(*[valid] * 5, odd)


def variables_of(source: str) -> st.SearchStrategy[object]:
    operation = parse(source).definitions[0]
    assert isinstance(operation, OperationDefinitionNode)
    modes = []
    for hostile in (False, True):
        required, optional = {}, {}
        for definition in operation.variable_definitions:
            graphql_type = type_from_ast(SCHEMA, definition.type)
            assert graphql_type is not None
            strategy = for_type(graphql_type, definition.variable.name.value, hostile)
            needed = isinstance(graphql_type, GraphQLNonNull) and definition.default_value is None
            (required if needed else optional)[definition.variable.name.value] = strategy
        values = st.fixed_dictionaries(required, optional=optional)
        if {"kind", "identifier"} <= required.keys():  # now and then a device that exists
            values = st.tuples(values, st.none() | DEVICES).map(
                lambda drawn: (
                    drawn[0]
                    if drawn[1] is None
                    else {**drawn[0], "kind": drawn[1][0], "identifier": drawn[1][1]}
                )
            )
        modes.append(values)
    storable, hostile_values = modes
    return st.one_of(*[storable] * 4, *[hostile_values] * 3, ANYTHING)


VARIABLES = {name: variables_of(source) for name, source in DOCUMENTS.items()}
REQUESTS = st.sampled_from(sorted(DOCUMENTS)).flatmap(
    lambda name: st.tuples(st.just(name), VARIABLES[name])
)
ACCEPT = st.sampled_from(
    ["application/json", "application/graphql-response+json", "*/*", "text/html;q=0.1"]
)


def assert_typed(response: httpx.Response, sent: str, label: str) -> None:
    """Below 500, and every GraphQL error coded, not masked, and free of internals."""
    assert response.status_code < 500, response.text
    leaks = [leak for leak in LEAKS if leak not in sent]  # an echo of the input is no leak
    if not response.headers.get("content-type", "").startswith(
        ("application/json", "application/graphql-response+json")
    ):
        event(f"{label}: {response.status_code}")
        return
    errors = response.json().get("errors") or []
    # How far examples get: --hypothesis-show-statistics lists these.
    codes = sorted({(e.get("extensions") or {}).get("code") or "none" for e in errors})
    event(f"{label}: {response.status_code} {' '.join(codes) or 'ok'}")
    for error in errors:
        assert not any(leak in error["message"] for leak in leaks), error
        code = (error.get("extensions") or {}).get("code")
        assert code, error
        assert code != "INTERNAL_SERVER_ERROR", error


@settings(max_examples=SCALE or 300, **SETTINGS)
@given(request=REQUESTS, accept=ACCEPT)
def test_frontend_documents_never_answer_500(live: Api, request, accept) -> None:
    name, variables = request
    # ensure_ascii: lone surrogates travel as \ud800 escapes, as JSON clients send them.
    body = json.dumps({"query": DOCUMENTS[name], "variables": variables})
    response = httpx.post(
        f"{live.base_url}/graphql",
        content=body,
        headers={**live.headers, "Content-Type": "application/json", "Accept": accept},
        timeout=WAIT_S,
    )
    assert_typed(response, body, name)
    if name in SUBSCRIPTIONS:  # no streaming HTTP protocol is on: always refused
        assert response.status_code == 400, response.text


# --- the CSV exports' query strings ------------------------------------------------


def _maybe(fields: dict[str, st.SearchStrategy]) -> st.SearchStrategy[dict[str, object]]:
    return st.fixed_dictionaries({}, optional=fields)


def csv_requests(text: st.SearchStrategy[str]) -> st.SearchStrategy[tuple[str, dict]]:
    """(path, parameters) of either export; ``text`` is what a parameter gets when it is
    not a realistic value. Realistic ones (existing devices, instants) are frequent enough
    to get past the checks to the upstream and to the report."""
    common = {
        "occurredAfter": REAL_INSTANTS | INSTANTS | text,
        "occurredBefore": REAL_INSTANTS | INSTANTS | text,
        "eventTypes": st.lists(st.sampled_from(["Activation", "Suspend"]) | text, max_size=3),
        "statuses": st.lists(st.sampled_from(["Success", "Failure"]) | text, max_size=3),
        "eventBy": st.lists(text, max_size=2),
        "extra": text,
    }
    device = st.one_of(
        *[DEVICES.map(":".join)] * 5,
        st.builds(lambda k, i: f"{k}:{i}", NAMED["kind"] | text, text),
    )
    history = st.tuples(
        DEVICES.map(lambda d: {"kind": d[0], "identifier": d[1]})
        | _maybe({"kind": NAMED["kind"] | text, "identifier": NAMED["identifier"] | text}),
        _maybe(common),
    ).map(lambda parts: {**parts[0], **parts[1]})
    report_options = {
        "groupBy": st.lists(
            st.sampled_from(["EVENT_TYPE", "STATUS", "EVENT_BY", "DEVICE"]) | text, max_size=3
        ),
        "bucket": st.sampled_from(["HOUR", "DAY", "WEEK", "MONTH"]) | text,
        "timeZone": NAMED["timeZone"] | text,
        **common,
    }
    required = {
        "devices": st.lists(device, min_size=1, max_size=4),
        "occurredAfter": REAL_INSTANTS,
        "occurredBefore": REAL_INSTANTS,
    }
    report = st.fixed_dictionaries(
        required, optional={k: v for k, v in report_options.items() if k not in required}
    ) | _maybe({"devices": st.lists(device, max_size=4), **report_options})
    return st.one_of(
        history.map(lambda params: ("/exports/provisioning-history.csv", params)),
        report.map(lambda params: ("/exports/provisioning-report.csv", params)),
    )


def _encoded(text: str) -> str:
    # surrogatepass: a lone surrogate arrives as the bytes that would encode it, which
    # are not UTF-8; a client library would refuse to send it at all.
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def query_string(params: dict[str, object]) -> str:
    pairs = []
    for name, value in params.items():
        for item in value if isinstance(value, list) else [value]:
            pairs.append(f"{_encoded(name)}={_encoded(str(item))}")
    return "&".join(pairs)


CSV_REQUESTS = st.one_of(
    csv_requests(STORABLE_TEXT), csv_requests(STORABLE_TEXT), csv_requests(ANY_TEXT)
)


@settings(max_examples=SCALE or 150, **SETTINGS)
@given(request=CSV_REQUESTS)
def test_csv_parameters_never_answer_500(live: Api, request) -> None:
    path, params = request
    url = f"{live.base_url}{path}?{query_string(params)}"
    # Read to the end: a failure after the first byte cuts the transfer, which raises here.
    with httpx.stream("GET", url, headers=live.headers, timeout=WAIT_S) as response:
        response.read()
    assert_typed(response, url, path.rsplit("/", 1)[-1])


# --- subscriptions: after, over a WebSocket ----------------------------------------


@pytest.fixture(scope="module")
def first_event(live: Api) -> int:
    """The id of an event every later replay with a smaller ``after`` delivers."""
    response = httpx.post(
        f"{live.base_url}/graphql",
        json={"query": CREATE, "variables": {"input": full_input()}},
        headers=live.headers,
        timeout=WAIT_S,
    )
    return int(response.json()["data"]["createProvisioningRecipe"]["event"]["id"])


AFTERS = st.one_of(ANY_TEXT, INTS.map(str), st.sampled_from(["0", recipe_events.event_id(0)]))


@settings(max_examples=SCALE or 50, **SETTINGS)
@given(after=AFTERS)
def test_subscription_after_never_fails_unexpectedly(live: Api, first_event: int, after) -> None:
    event_id = (
        after.isascii()
        and after.isdigit()
        and len(after) <= len(recipe_events.event_id(0))
        and int(after) < 2**63
    )
    # A valid after at or past the first event waits for live events: nothing to read.
    assume(not event_id or int(after) < first_event)
    unstorable = any(c == "\x00" or 0xD800 <= ord(c) <= 0xDFFF for c in after)
    subscribe = {"query": document("RecipeCreated"), "variables": {"after": after}}
    with connect(live.ws_url, subprotocols=["graphql-transport-ws"]) as socket:
        socket.send(json.dumps({"type": "connection_init", "payload": live.headers}))
        assert json.loads(socket.recv(WAIT_S))["type"] == "connection_ack"
        socket.send(json.dumps({"id": "1", "type": "subscribe", "payload": subscribe}))
        if unstorable:  # text no input can take: an invalid message, the protocol's 4400
            with pytest.raises(websockets.ConnectionClosed) as closed:
                socket.recv(WAIT_S)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 4400
            return
        message = json.loads(socket.recv(WAIT_S))
    if event_id:  # replays the first event
        assert message["type"] == "next", message
        assert "errors" not in message["payload"], message
        return
    errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
    assert errors, message
    for error in errors:
        assert error["extensions"]["code"] == "BAD_USER_INPUT", error
