"""How each event of a subscription is executed.

graphql-core 3.3 runs every event on a shallow copy of the subscription's executor, and
the copy shares the executor's memo of collected subfields. That memo is keyed by the
identity of lists that each event builds anew, so it never hits across events and keeps
every event's entries for as long as the subscription lives: about 1.4 KiB per delivery,
measured with eight subscribers (`bench/load.py`). Each event here gets an executor of
its own, built through the public constructor from the subscription's validated
arguments, and the memo goes with the event.
"""

from typing import Any

from graphql import Executor
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext


class EventExecutor(StrawberryGraphQLCoreExecutionContext):
    def build_per_event_executor(self, payload: Any) -> Executor[Any]:
        return type(self)(
            self.schema,
            self.fragment_definitions,
            self.fragments,
            payload,
            self.context_value,
            self.operation,
            self.variable_values,
            self.field_resolver,
            self.type_resolver,
            self.subscribe_field_resolver,
            enable_early_execution=self.enable_early_execution,
            middleware_manager=self.middleware_manager,
            is_awaitable=self.is_awaitable,
            is_async_iterable=self.is_async_iterable,
            hide_suggestions=self.hide_suggestions,
            abort_signal=self.abort_signal,
            hooks=self.hooks,
            operation_extensions=self.operation_extensions,
        )
