"""The process's Prometheus metrics, served at ``GET /metrics``.

They live in prometheus_client's default registry, beside its process collectors
(memory, CPU, open files). Labels take only bounded values: operation names from the
schema or the WSDL, outcome codes, never identifiers or user input.
"""

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "provgraph_requests",
    "GraphQL operations and CSV exports served, by operation name and outcome "
    "(ok, or the first error's code).",
    ["operation", "outcome"],
)
UPSTREAM_CALLS = Counter(
    "provgraph_upstream_calls",
    "UWS calls made, by operation and outcome (ok, or the error's code).",
    ["operation", "outcome"],
)
UPSTREAM_SECONDS = Histogram(
    "provgraph_upstream_call_seconds",
    "Time of one UWS call attempt, by operation.",
    ["operation"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
UPSTREAM_RETRIES = Counter(
    "provgraph_upstream_retries",
    "UWS calls retried after a transient failure, by operation.",
    ["operation"],
)
CIRCUIT_STATE = Gauge(
    "provgraph_upstream_circuit_state",
    "The upstream circuit breaker: 0 closed, 1 half-open (probing), 2 open.",
)
CACHE_LOOKUPS = Counter(
    "provgraph_cache_lookups",
    "Window and device-list cache lookups, by result (hit, miss, stale).",
    ["result"],
)
CACHE_BYTES = Gauge(
    "provgraph_cache_bytes",
    "Memory held by the in-process window cache (an estimate), bounded by CACHE_MAX_BYTES.",
)
OPEN_SUBSCRIPTIONS = Gauge(
    "provgraph_open_subscriptions",
    "GraphQL subscriptions currently open on this process.",
)
RATE_LIMITED = Counter(
    "provgraph_rate_limited",
    "Requests refused with 429 by the per-credential rate limit.",
)
SHARED_EXECUTIONS = Counter(
    "provgraph_shared_subscription_executions",
    "Live subscription events executed: once per event for each group of subscribers with "
    "the same document, variables, organizations and scopes (graph/sharing.py).",
)
SHARED_DELIVERIES = Counter(
    "provgraph_shared_subscription_deliveries",
    "Results of those executions handed to subscribers.",
)
SHARED_GROUPS = Gauge(
    "provgraph_shared_subscription_groups",
    "Groups of subscribers sharing one execution per event, open on this process.",
)
REPORT_CHUNKS = Counter(
    "provgraph_report_chunks",
    "Report job chunks by what happened: done, retried (an attempt failed), reclaimed "
    "(taken over after its worker stopped).",
    ["event"],
)
REPORT_CHUNK_SECONDS = Histogram(
    "provgraph_report_chunk_seconds",
    "Time of one report job chunk's finishing attempt.",
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0),
)
REPORT_QUEUE_DEPTH = Gauge(
    "provgraph_report_queue_depth",
    "Report job steps (plans and chunks) waiting for a worker, as this replica last saw.",
)
BUDGET_WAIT_SECONDS = Histogram(
    "provgraph_upstream_budget_wait_seconds",
    "Time a call attempt waited for the upstream budget (UPSTREAM_CONCURRENCY in flight, "
    "and on a shared budget UPSTREAM_CALLS_PER_SECOND too), by priority (interactive, job).",
    ["priority"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
BUDGET_IN_FLIGHT = Gauge(
    "provgraph_upstream_budget_in_flight",
    "Call attempts of this process holding a slot of the upstream budget.",
)
