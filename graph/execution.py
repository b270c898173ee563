"""The executor of every operation: compiled plans for plain selections, and an executor
of its own for each event of a subscription.

Plans (``graph.compiled``): where a value to complete is an object or a list whose whole
selection is plain fields, a plan compiled for that selection completes it in one call;
where the plan meets anything it leaves to graphql-core, or none applies, the value takes
graphql-core's route, unchanged.

Events: graphql-core 3.3 runs every event on a shallow copy of the subscription's
executor, and the copy shares the executor's memo of collected subfields. That memo is
keyed by the identity of lists that each event builds anew, so it never hits across
events and keeps every event's entries for as long as the subscription lives: about
1.4 KiB per delivery, measured with eight subscribers (`bench/load.py`). Each event here
gets an executor of its own, built through the public constructor from the
subscription's validated arguments, and the memo goes with the event.
"""

from typing import Any, ClassVar

from graphql import (
    Executor,
    GraphQLList,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLResolveInfo,
)
from graphql.execution.collect_fields import FieldDetailsList
from graphql.pyutils import Path
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from graph.compiled import Plan, plan_for, unplannable_fields


class EventExecutor(StrawberryGraphQLCoreExecutionContext):
    compiled: ClassVar[bool] = True
    """Whether plain selections take their compiled plans; a subclass with False runs
    every field by graphql-core's route (what the equivalence tests compare against)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.unplannable = unplannable_fields(self.middleware_manager) if self.compiled else None
        # Per (type, field details list): graphql-core reuses one list for every value
        # it completes at a position, so a page asks the shared cache once per position.
        self.selection_plans: dict[tuple[int, int], tuple[FieldDetailsList, Plan | None]] = {}

    def complete_value(
        self,
        return_type: GraphQLOutputType,
        field_details_list: FieldDetailsList,
        info: GraphQLResolveInfo[Any],
        path: Path,
        result: Any,
        position_context: Any,
    ) -> Any:
        unplannable = self.unplannable
        if (
            unplannable is not None
            and result is not None
            and position_context is None  # nothing deferred below
            and isinstance(return_type, GraphQLList | GraphQLObjectType)
        ):
            key = (id(return_type), id(field_details_list))
            known = self.selection_plans.get(key)
            if known is None:
                plan = plan_for(self, return_type, field_details_list, unplannable)
                self.selection_plans[key] = (field_details_list, plan)
            else:
                plan = known[1]
            if plan is not None:
                try:
                    completed = plan.run(result)
                except Exception:
                    plan.fallbacks += 1
                else:
                    plan.hits += 1
                    return completed
        return super().complete_value(
            return_type, field_details_list, info, path, result, position_context
        )

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
