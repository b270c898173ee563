"""The recipe events the outbox still keeps, newest last: where a live feed starts.

A client that reads these and then subscribes with ``after`` must miss nothing and see
nothing twice. So a read first takes the outbox's head (its last sequence number) and
then reads no further than it: the head is where the subscription takes over. Reading
the head after the events would lose whatever committed in between. Every sequence
number up to a committed head has committed too (or never will): the outbox's writers
number their rows in commit order (``RecipeStore._emit``).
"""

from dataclasses import dataclass

from sqlalchemy import func
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models.principal import Principal
from models.recipes import OutboxEvent


@dataclass(frozen=True)
class RecentEvents:
    events: list[OutboxEvent]
    """Oldest first."""
    more: bool
    """Whether older events the caller may see lie before them."""
    head: int
    """The outbox's last sequence number when they were read (0 when empty), whichever
    organization its event belongs to: the position a subscription continues from."""


class RecipeEventLog:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def recent(
        self,
        principal: Principal,
        organization_uid: str | None,
        size: int,
        before: int | None,
    ) -> RecentEvents:
        """The last ``size`` events of the caller's organizations (of ``organization_uid``
        alone, if given) before the sequence number ``before``."""
        async with self._sessions() as session:
            head = (await session.exec(select(func.max(OutboxEvent.seq)))).one() or 0
            query = select(OutboxEvent).where(col(OutboxEvent.seq) <= head)
            if before is not None:
                query = query.where(col(OutboxEvent.seq) < before)
            if organization_uid is not None:
                query = query.where(OutboxEvent.organization_uid == organization_uid)
            if not principal.all_organizations:
                query = query.where(col(OutboxEvent.organization_uid).in_(principal.organizations))
            query = query.order_by(col(OutboxEvent.seq).desc()).limit(size + 1)
            rows = list((await session.exec(query)).all())
        return RecentEvents(rows[:size][::-1], len(rows) > size, head)
