"""Every GraphQL error gets a code, unexpected ones are masked and logged once; operations
and open subscriptions are counted (``server.metrics`` serves the counts); and the one
extension every operation runs."""

import asyncio
import logging
import threading
from collections.abc import Hashable, Iterator
from typing import Any

import strawberry
from graphql import DocumentNode, GraphQLError, GraphQLSyntaxError, get_operation_ast
from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionContext
from strawberry.types.graphql import OperationType

from graph.context import Context
from graph.errors import UNEXPECTED, response_extensions, type_errors
from graph.errors import _extensions as typed_extensions
from graph.limits import check_cost, limit, parse_refused
from graph.requests import current_request
from graph.sharing import shared_execution
from models.errors import ErrorCode
from resolvers.metrics import OPEN_SUBSCRIPTIONS, REQUESTS
from resolvers.upstream import Cost

MAX_OPERATION_LABELS = 200
"""Distinct operation names the metrics keep apart; later ones count as "other"."""

log = logging.getLogger(__name__)


def _unexpected(error: GraphQLError) -> bool:
    original = error.original_error
    if original is None or isinstance(original, GraphQLError):
        return False  # graphql-core's own findings, or raised on purpose with a message
    # A scalar refusing an input value points at the value in the document. An exception
    # escaping a resolver has a path; one escaping an extension hook has neither.
    return error.path is not None or not error.nodes


def _mask(error: GraphQLError) -> None:
    """In place, so that every way Strawberry returns errors returns the masked one."""
    info = current_request()
    where = ".".join(str(key) for key in error.path) if error.path else None
    log.error("unexpected error", exc_info=error.original_error, extra={"field": where})
    error.message = UNEXPECTED
    error.original_error = None
    error.extensions = {"code": ErrorCode.INTERNAL_SERVER_ERROR}
    if info is not None:
        error.extensions["requestId"] = info.id


def classify(error: GraphQLError) -> None:
    """Gives ``error`` its code; masks it when nobody meant it to happen."""
    if (error.extensions or {}).get("code"):
        return
    typed = typed_extensions(error.original_error) if error.original_error else None
    if typed is not None:
        error.extensions = {**(error.extensions or {}), **typed}
    elif _unexpected(error):
        _mask(error)
    elif isinstance(error, GraphQLSyntaxError) and parse_refused(error):
        error.extensions = {"code": ErrorCode.QUERY_TOO_COMPLEX, "limit": "tokens"}
    elif isinstance(error, GraphQLSyntaxError):
        error.extensions = {"code": ErrorCode.GRAPHQL_PARSE_FAILED}
    elif error.path is None:
        error.extensions = {"code": ErrorCode.GRAPHQL_VALIDATION_FAILED}
    else:  # graphql-core found a resolved value the schema cannot hold: our bug
        error.extensions = {"code": ErrorCode.INTERNAL_SERVER_ERROR}


class Schema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Instead of Strawberry's logging of every error with its traceback: unexpected
        # errors are logged where they are masked, the rest are the caller's business.
        for error in errors:
            classify(error)


_labels: set[str] = set()


def _operation_label(context: ExecutionContext) -> str:
    document = context.graphql_document
    operation = get_operation_ast(document, context.operation_name) if document else None
    name = operation.name.value if operation is not None and operation.name else None
    if name is None:
        return "anonymous"
    # Names come from clients: keep the label set bounded whatever they send.
    if name not in _labels and len(_labels) >= MAX_OPERATION_LABELS:
        return "other"
    _labels.add(name)
    return name


def _past_deadline() -> bool:
    info = current_request()
    return info is not None and info.deadline is not None and info.deadline.expired()


def _outcome(errors: list[GraphQLError] | None) -> str:
    if not errors:
        return "ok"
    return str((errors[0].extensions or {}).get("code") or ErrorCode.INTERNAL_SERVER_ERROR)


DOCUMENTS_KEPT = 256
"""Valid documents kept parsed (per text, token limit and validation rules)."""

_documents: dict[Hashable, DocumentNode] = {}
_documents_lock = threading.Lock()  # the in-process benchmarks run two loops


class OperationHooks(SchemaExtension):
    """What every operation runs around it, in one extension, as Strawberry's hooks cost
    per extension and per stage of every request: its limits (``graph.limits``), its
    Cost and device lookups, its document parsed and validated once per text, its
    metrics (provgraph_requests by operation and outcome, provgraph_open_subscriptions),
    and its response's extensions (cost and warnings).

    A document that passed validation is kept under its text, token limit and rules, and
    given to the next request with them before Strawberry parses: neither parsed nor
    validated again, nor hashed (an AST hashes its whole tree: ~26 us for a history page's
    document). One that fails is parsed and validated again the next time, as any new one.
    """

    def __init__(self) -> None:
        self._subscribed = False
        self._cost: Cost | None = None
        self._document_key: Hashable | None = None

    def on_operation(self) -> Iterator[None]:
        # A group's own operation (graph/sharing.py) is not counted: its members' are.
        counted = not shared_execution()
        outcome: str | None = None
        try:
            self._begin()
            yield
            result = self.execution_context.result
            outcome = _outcome(getattr(result, "errors", None))
        except GraphQLError as error:  # refused by a hook (the cost limit)
            outcome = _outcome([error])
            raise
        except GeneratorExit:
            outcome = "ok"  # a subscription its client ended
            raise
        except asyncio.CancelledError:
            outcome = ErrorCode.DEADLINE_EXCEEDED if _past_deadline() else "cancelled"
            raise
        except Exception:
            outcome = ErrorCode.INTERNAL_SERVER_ERROR
            raise
        finally:
            if counted:
                self._count(outcome)

    def _begin(self) -> None:
        execution = self.execution_context
        context = execution.context
        limit(execution, context.services.limits)
        # Operations over one WebSocket share a Context, each with a Cost of its own.
        if isinstance(context, Context):
            self._cost = context.begin_operation()
        if execution.graphql_document is None and execution.query is not None:
            key = (
                execution.schema,
                execution.query,
                execution.parse_options.get("max_tokens"),
                execution.validation_rules,
            )
            document = _documents.get(key)
            if document is None:
                self._document_key = key  # kept once it has passed validation
            else:
                execution.graphql_document = document
                execution.pre_execution_errors = []  # Strawberry validates no further

    def _count(self, outcome: str | None) -> None:
        if self._subscribed:
            OPEN_SUBSCRIPTIONS.dec()
        label = _operation_label(self.execution_context)
        if (info := current_request()) is not None:
            info.operation = label  # for the access line
        if outcome is not None:
            REQUESTS.labels(label, outcome).inc()

    def on_execute(self) -> Iterator[None]:
        execution = self.execution_context
        # Validation has passed: Strawberry executes only valid documents.
        if self._document_key is not None and execution.graphql_document is not None:
            _keep(self._document_key, execution.graphql_document)
        if execution.operation_type is OperationType.SUBSCRIPTION and not shared_execution():
            self._subscribed = True
            OPEN_SUBSCRIPTIONS.inc()
        check_cost(execution, execution.context.services.limits.max_query_cost)
        yield
        result = execution.result
        if result is not None and result.errors:
            type_errors(result.errors)

    def get_results(self) -> dict[str, Any]:
        return response_extensions(self._cost) if self._cost is not None else {}


def _keep(key: Hashable, document: DocumentNode) -> None:
    with _documents_lock:
        if len(_documents) >= DOCUMENTS_KEPT:
            del _documents[next(iter(_documents))]  # the oldest
        _documents[key] = document
