"""OpenTelemetry spans for GraphQL operations and the few resolvers worth a span of their
own, while tracing is on (the server turns it on when it configures an exporter).

Strawberry's OpenTelemetryExtension did not fit: its ``resolve`` is a coroutine, so with it
every field of a 500-event page became an awaitable and each resolver with code its own
span; it records every resolver's arguments (device identifiers) and the whole document;
and its operation span is never made current, so work below an untraced resolver would
start traces of its own. Here the operation's span is current while it runs, so that the
cache lookups and upstream calls below it (``resolvers.upstream``, ``soap.client``) are its
descendants, and only the named fields get spans. While tracing is off the schema gets a
hookless extension in place of this one: no hook runs and no field is wrapped.
"""

import asyncio
from collections.abc import Callable, Collection, Iterator, Sequence
from inspect import isawaitable
from typing import Any

from graphql import GraphQLError, GraphQLResolveInfo, get_operation_ast
from opentelemetry import context, trace
from opentelemetry.trace import Span, SpanKind, StatusCode
from strawberry.extensions import SchemaExtension

from graph.requests import current_request

_tracer = trace.get_tracer(__name__)
_traced = False


def trace_operations(on: bool) -> None:
    """Turns the spans on or off for the process, as OpenTelemetry's tracer provider is."""
    global _traced
    _traced = on


def traced() -> bool:
    """Whether tracing is on: what the server asks before it reads a request's trace."""
    return _traced


class OperationTracing(SchemaExtension):
    """A span for each operation, current while it runs, and one for each named field."""

    def __init__(self, fields: frozenset[str]) -> None:
        super().__init__()
        self._fields = fields

    @property
    def wrapped_fields(self) -> frozenset[str]:
        """The fields with spans: ``resolve`` calls on with every other field unchanged,
        so compiled plans (``graph.compiled``) may complete those."""
        return self._fields

    def on_operation(self) -> Iterator[None]:
        # Beneath the server's span of an HTTP request the operation is a step of it; over
        # a WebSocket (at most a caller's remote span above it) it is what is served.
        above = trace.get_current_span().get_span_context()
        local = above.is_valid and not above.is_remote
        kind = SpanKind.INTERNAL if local else SpanKind.SERVER
        span = _tracer.start_span("GraphQL operation", kind=kind)
        if (request := current_request()) is not None:
            span.set_attribute("provgraph.request_id", request.id)
        token = context.attach(trace.set_span_in_context(span))
        task = asyncio.current_task()
        try:
            yield
            result = self.execution_context.result
            _outcome(span, getattr(result, "errors", None))
        except GraphQLError as error:  # refused by a hook (the cost limit)
            _outcome(span, [error])
            raise
        except Exception as exc:
            span.record_exception(exc)
            span.set_status(StatusCode.ERROR, type(exc).__name__)
            raise
        finally:
            self._name(span)
            # A subscription may be finalised from another task, whose context never
            # held this span: only the task that attached it detaches it.
            if asyncio.current_task() is task:
                context.detach(token)
            span.end()

    def _name(self, span: Span) -> None:
        """Names the span after the operation, known once the document is parsed."""
        document = self.execution_context.graphql_document
        name = self.execution_context.operation_name
        operation = get_operation_ast(document, name) if document is not None else None
        if operation is None:
            return
        kind = operation.operation.value
        span.set_attribute("graphql.operation.type", kind)
        if operation.name is not None:
            span.set_attribute("graphql.operation.name", operation.name.value)
            span.update_name(f"{kind} {operation.name.value}")
        else:
            span.update_name(kind)

    def resolve(
        self,
        _next: Callable[..., Any],
        root: Any,
        info: GraphQLResolveInfo[Any],
        *args: str,
        **kwargs: Any,
    ) -> object:
        # Synchronous, so that the fields without a span stay as cheap as they were.
        field = f"{info.parent_type.name}.{info.field_name}"
        if field not in self._fields:
            return _next(root, info, *args, **kwargs)
        return _spanned(field, info, lambda: _next(root, info, *args, **kwargs))


async def _spanned(field: str, info: GraphQLResolveInfo[Any], call: Callable[[], object]) -> object:
    path = ".".join(str(key) for key in info.path.as_list())
    with _tracer.start_as_current_span(field, attributes={"graphql.field.path": path}):
        result = call()
        return await result if isawaitable(result) else result


def _outcome(span: Span, errors: Sequence[GraphQLError] | None) -> None:
    """The code of the operation's first error, as the metrics label it; no span status,
    as most codes are the caller's business (the spans below mark what failed)."""
    if errors:
        code = (errors[0].extensions or {}).get("code")
        span.set_attribute("error.type", str(code or "INTERNAL_SERVER_ERROR"))


def tracing(fields: Collection[str]) -> Callable[[], SchemaExtension]:
    """The schema's extension factory: ``OperationTracing`` with spans for ``fields``
    (``Type.field``) while tracing is on, else an extension with no hook at all."""
    named = frozenset(fields)

    def extension() -> SchemaExtension:
        return OperationTracing(named) if _traced else SchemaExtension()

    return extension
