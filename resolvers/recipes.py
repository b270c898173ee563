"""Provisioning recipes: validation, storage with their outbox events, keyset pages.

Status transitions: Pending -> Applied | Failed | Invalid, and Failed -> Pending (a
retry). Applied and Invalid are final. A transition is a compare-and-set on the status read
(one UPDATE ... WHERE status = <read>), so concurrent updates cannot both leave one status,
on SQLite (no row locks) as on PostgreSQL; its event is written in the same transaction.
"""

import dataclasses
import hashlib
import json
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import delete, func, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from models import recipe_events
from models.devices import DeviceIdentifier
from models.errors import UserErrorCode
from models.principal import Principal
from models.recipe_fields import (
    RECIPE_FIELDS,
    Check,
    OwnershipType,
    RecipeField,
    RecipeStatus,
    values_of,
    with_recipe_fields,
)
from models.recipes import IDEMPOTENCY_KEY_LENGTH, MESSAGE_LENGTH, OutboxEvent, ProvisioningRecipe
from models.text import UNSTORABLE_RULE, storable
from resolvers.recipe_events import RecipeEventLog

TRANSITIONS: dict[RecipeStatus, frozenset[RecipeStatus]] = {
    RecipeStatus.PENDING: frozenset(
        {RecipeStatus.APPLIED, RecipeStatus.FAILED, RecipeStatus.INVALID}
    ),
    RecipeStatus.FAILED: frozenset({RecipeStatus.PENDING}),
    RecipeStatus.APPLIED: frozenset(),
    RecipeStatus.INVALID: frozenset(),
}
_UID = re.compile(r"[0-9a-fA-F]{32}")
_MAC = re.compile(r"([0-9A-Fa-f]{2})[:-]?" * 5 + r"([0-9A-Fa-f]{2})")
_OUTBOX_LOCK = 7_216_011  # pg_advisory_xact_lock key: outbox rows commit in seq order
_LOCKED = select(func.pg_advisory_xact_lock(_OUTBOX_LOCK)).cte("locked").prefix_with("MATERIALIZED")
_LOCKED_SEQ = select(
    func.nextval(func.pg_get_serial_sequence(OutboxEvent.__tablename__, "seq"))
).select_from(_LOCKED)
"""PostgreSQL's next outbox sequence number, drawn once the outbox lock is held: a
materialized CTE is computed on its own, before the query that reads it."""
_Row = TypeVar("_Row")


@dataclass(frozen=True)
class UserError:
    field: list[str]
    code: UserErrorCode
    message: str


@dataclass(frozen=True, kw_only=True)
@with_recipe_fields(
    "organization_uid",
    lambda spec: field() if spec.required else field(default=None),
)
class NewRecipe:
    """What a caller asks to create: the recipe's plain fields (``RecipeFields``) too."""

    organization_uid: str
    owner_ownership_type: OwnershipType = OwnershipType.ORGANIZATION
    owner_organization_uid: str | None = None
    owner_parent_company_uid: str | None = None
    device: DeviceIdentifier | None = None
    idempotency_key: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class RecipeFilter:
    organization_uid: str | None = None
    statuses: Sequence[RecipeStatus] | None = None
    serial_number: str | None = None
    mac_address: str | None = None
    device: DeviceIdentifier | None = None


@dataclass
class Outcome:
    """A recipe and the event its change emitted; or what was wrong with the input."""

    recipe: ProvisioningRecipe | None = None
    event: OutboxEvent | None = None
    errors: list[UserError] = field(default_factory=list)
    seq: int | None = None


def canonical_mac(value: str) -> str | None:
    """Six hex pairs, with ':' or '-' or nothing between, as 'AA:BB:CC:DD:EE:FF'."""
    match = _MAC.fullmatch(value.strip())
    return ":".join(match.groups()).upper() if match else None


def _check_uid(errors: list[UserError], path: list[str], value: str | None) -> str | None:
    if value is None:
        return None
    if not _UID.fullmatch(value):
        errors.append(
            UserError(path, UserErrorCode.INVALID_UID, "Must be 32 hexadecimal characters.")
        )
        return None
    return value.lower()


def _check_characters(errors: list[UserError], path: list[str], value: str | None) -> None:
    if value is not None and not storable(value):
        errors.append(
            UserError(
                path,
                UserErrorCode.INVALID_CHARACTERS,
                f"Text {UNSTORABLE_RULE}",
            )
        )


def _check_text(errors: list[UserError], spec: RecipeField, value: str) -> str:
    if spec.max_length is not None and len(value) > spec.max_length:
        errors.append(
            UserError(
                ["input", spec.key],
                UserErrorCode.TOO_LONG,
                f"At most {spec.max_length} characters.",
            )
        )
    else:
        _check_characters(errors, ["input", spec.key], value)
    return value


def _check_mac(errors: list[UserError], path: list[str], value: str) -> str | None:
    mac = canonical_mac(value)
    if mac is None:
        errors.append(
            UserError(
                path,
                UserErrorCode.INVALID_MAC_ADDRESS,
                "Must be six pairs of hex digits, e.g. 29:9F:66:C8:00:1A.",
            )
        )
    return mac


def _check_tags(errors: list[UserError], spec: RecipeField, tags: list[str]) -> list[str]:
    if spec.max_length is not None and len(tags) > spec.max_length:
        errors.append(
            UserError(
                ["input", spec.key], UserErrorCode.TOO_MANY, f"At most {spec.max_length} tags."
            )
        )
    checked = [_check_uid(errors, ["input", spec.key, str(i)], tag) for i, tag in enumerate(tags)]
    return list(dict.fromkeys(t for t in checked if t))


def _check_field(errors: list[UserError], spec: RecipeField, value: Any) -> Any:
    """The value of one plain field in canonical form; what is wrong with it in ``errors``."""
    if spec.check is Check.TEXT and value is not None:
        value = value.strip() or None  # blank text is no text
    if value is None:
        if spec.required:
            errors.append(
                UserError(["input", spec.key], UserErrorCode.REQUIRED, f"{spec.key} is required.")
            )
        return None
    match spec.check:
        case Check.TEXT:
            return _check_text(errors, spec, value)
        case Check.UID:
            return _check_uid(errors, ["input", spec.key], value)
        case Check.MAC_ADDRESS:
            return _check_mac(errors, ["input", spec.key], value)
        case Check.TAGS:
            return _check_tags(errors, spec, value)
        case None:
            return value


def validate(new: NewRecipe) -> tuple[NewRecipe, list[UserError]]:
    """The input in canonical form, and everything wrong with it, in the input's order."""
    errors: list[UserError] = []
    owner_organization = _check_uid(
        errors, ["input", "owner", "organizationUid"], new.owner_organization_uid
    )
    owner_parent_company = _check_uid(
        errors, ["input", "owner", "parentCompanyUid"], new.owner_parent_company_uid
    )
    organization = None
    if not new.organization_uid or not new.organization_uid.strip():
        errors.append(
            UserError(
                ["input", "organizationUid"], UserErrorCode.REQUIRED, "organizationUid is required."
            )
        )
    else:
        organization = _check_uid(errors, ["input", "organizationUid"], new.organization_uid)
    values = {
        spec.name: _check_field(errors, spec, getattr(new, spec.name)) for spec in RECIPE_FIELDS
    }
    key = new.idempotency_key
    if key is not None and not 0 < len(key) <= IDEMPOTENCY_KEY_LENGTH:
        errors.append(
            UserError(
                ["input", "idempotencyKey"],
                UserErrorCode.INVALID,
                f"1 to {IDEMPOTENCY_KEY_LENGTH} characters.",
            )
        )
    else:
        _check_characters(errors, ["input", "idempotencyKey"], key)
    canonical = dataclasses.replace(
        new,
        **values,
        organization_uid=organization or "",
        owner_organization_uid=owner_organization,
        owner_parent_company_uid=owner_parent_company,
    )
    return canonical, errors


def _digest(new: NewRecipe) -> str:
    data = asdict(new)
    data.pop("idempotency_key")
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def _organization_errors(new: NewRecipe, principal: Principal) -> list[UserError]:
    """The organizations the recipe names that the caller does not act for."""
    errors = []
    if new.organization_uid and not principal.may_see(new.organization_uid):
        errors.append(
            UserError(
                ["input", "organizationUid"],
                UserErrorCode.FORBIDDEN,
                "You may not create recipes for this organization.",
            )
        )
    if new.owner_organization_uid and not principal.may_see(new.owner_organization_uid):
        errors.append(
            UserError(
                ["input", "owner", "organizationUid"],
                UserErrorCode.FORBIDDEN,
                "You may not name an organization you do not act for as the owner.",
            )
        )
    return errors


def _new_row(new: NewRecipe, principal: Principal, digest: str) -> ProvisioningRecipe:
    now = _now()
    return ProvisioningRecipe(
        **values_of(new),
        uid=uuid.uuid4().hex,
        organization_uid=new.organization_uid,
        owner_ownership_type=new.owner_ownership_type,
        owner_organization_uid=new.owner_organization_uid,
        owner_parent_company_uid=new.owner_parent_company_uid,
        status=RecipeStatus.PENDING,
        originator_account_id=principal.account_id,
        # The organization the caller acted for; none for an all-organizations operator.
        originator_organization_uid=(
            new.organization_uid if new.organization_uid in principal.organizations else None
        ),
        device_kind=new.device.kind if new.device else None,
        device_identifier=new.device.identifier if new.device else None,
        idempotency_key=new.idempotency_key,
        idempotency_subject=principal.subject if new.idempotency_key else None,
        idempotency_digest=digest if new.idempotency_key else None,
        created_at=now,
        updated_at=now,
    )


class RecipeStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self.log = RecipeEventLog(sessions)

    async def _emit(
        self, session: AsyncSession, recipe: ProvisioningRecipe, build: Callable[..., Any]
    ) -> OutboxEvent:
        """Writes the recipe's event to the outbox, in the recipe's own transaction."""
        seq = None
        if session.bind.dialect.name == "postgresql":
            # Sequence numbers must follow commit order, or a reader could pass a number
            # whose transaction has not committed yet: one writer at a time, from the lock
            # to the commit. The lock and the number in one round trip, the row written
            # whole with the commit: the writers' round trips under the lock are in
            # series, and each waits for its turn in an event loop that may be busy
            # sending events to many subscribers.
            seq = (await session.exec(_LOCKED_SEQ)).one()
        row = OutboxEvent(
            seq=seq,
            event_id="",
            type="",
            organization_uid=recipe.organization_uid,
            recipe_uid=recipe.uid,
            document={},
            created_at=_now(),
        )
        session.add(row)
        if row.seq is None:
            await session.flush()  # SQLite numbers the row as it writes it
        assert row.seq is not None
        row.document = build(recipe, row.seq)
        row.event_id = row.document["id"]
        row.type = row.document["type"]
        return row

    async def create(
        self,
        new: NewRecipe,
        principal: Principal,
        device_exists: Callable[[DeviceIdentifier], Awaitable[bool]],
    ) -> Outcome:
        new, errors = validate(new)
        errors += _organization_errors(new, principal)
        if errors:
            return Outcome(errors=errors)
        digest = _digest(new)
        if new.idempotency_key is not None:
            earlier = await self._by_idempotency_key(new, principal)
            if earlier is not None:
                return await self._replay(earlier, digest)
        if new.device is not None and not await device_exists(new.device):
            return Outcome(
                errors=[
                    UserError(
                        ["input", "device"],
                        UserErrorCode.DEVICE_NOT_FOUND,
                        "The upstream does not know this device.",
                    )
                ]
            )
        recipe = _new_row(new, principal, digest)
        try:
            async with self._sessions() as session, session.begin():
                session.add(recipe)
                await session.flush()
                row = await self._emit(session, recipe, recipe_events.created)
        except IntegrityError:
            # A concurrent request with the same idempotency key won the race.
            earlier = await self._by_idempotency_key(new, principal)
            if earlier is None:
                raise
            return await self._replay(earlier, digest)
        return Outcome(recipe, row, seq=row.seq)

    async def _by_idempotency_key(
        self, new: NewRecipe, principal: Principal
    ) -> ProvisioningRecipe | None:
        """The recipe this caller created with this key for this organization, if any."""
        if new.idempotency_key is None:
            return None
        async with self._sessions() as session:
            found = await session.exec(
                select(ProvisioningRecipe).where(
                    ProvisioningRecipe.organization_uid == new.organization_uid,
                    ProvisioningRecipe.idempotency_subject == principal.subject,
                    ProvisioningRecipe.idempotency_key == new.idempotency_key,
                )
            )
            return found.first()

    async def _replay(self, earlier: ProvisioningRecipe, digest: str) -> Outcome:
        if earlier.idempotency_digest != digest:
            return Outcome(
                errors=[
                    UserError(
                        ["input", "idempotencyKey"],
                        UserErrorCode.IDEMPOTENCY_KEY_REUSED,
                        "This idempotency key was used with a different input.",
                    )
                ]
            )
        async with self._sessions() as session:
            found = await session.exec(
                select(OutboxEvent).where(
                    OutboxEvent.recipe_uid == earlier.uid, OutboxEvent.type == recipe_events.CREATED
                )
            )
            row = found.first()
        return Outcome(earlier, row)

    async def update_status(
        self,
        uid: str,
        status: RecipeStatus,
        principal: Principal,
        error_message: str | None = None,
        warning_message: str | None = None,
    ) -> Outcome:
        errors: list[UserError] = []
        for name, value in (("errorMessage", error_message), ("warningMessage", warning_message)):
            if value is not None and len(value) > MESSAGE_LENGTH:
                errors.append(
                    UserError(
                        ["input", name],
                        UserErrorCode.TOO_LONG,
                        f"At most {MESSAGE_LENGTH} characters.",
                    )
                )
            else:
                _check_characters(errors, ["input", name], value)
        if not _UID.fullmatch(uid):
            errors.append(
                UserError(
                    ["input", "uid"],
                    UserErrorCode.INVALID_UID,
                    "Must be 32 hexadecimal characters.",
                )
            )
        if errors:
            return Outcome(errors=errors)
        uid = uid.lower()
        async with self._sessions() as session, session.begin():
            while True:
                found = await session.exec(
                    select(ProvisioningRecipe)
                    .where(ProvisioningRecipe.uid == uid)
                    .with_for_update()
                    .execution_options(populate_existing=True)  # a re-read reads anew
                )
                current = found.first()
                if current is None or not principal.may_see(current.organization_uid):
                    return Outcome(
                        errors=[
                            UserError(
                                ["input", "uid"], UserErrorCode.NOT_FOUND, "No recipe has this uid."
                            )
                        ]
                    )
                if status not in TRANSITIONS[current.status]:
                    allowed = ", ".join(sorted(TRANSITIONS[current.status])) or "none (final)"
                    return Outcome(
                        errors=[
                            UserError(
                                ["input", "status"],
                                UserErrorCode.INVALID_TRANSITION,
                                f"A {current.status} recipe cannot become {status}; "
                                f"allowed: {allowed}.",
                            )
                        ]
                    )
                recipe = await self._compare_and_set(
                    session, uid, current.status, status, error_message, warning_message
                )
                if recipe is not None:
                    break
                # Another update moved it between our read and our write: SQLite has no
                # row locks, so FOR UPDATE held nothing (on PostgreSQL it holds the row and
                # this cannot happen). The UPDATE has taken SQLite's write lock, though:
                # the status read again stays put until commit, so one more turn settles.
            row = await self._emit(session, recipe, recipe_events.status_updated)
        return Outcome(recipe, row, seq=row.seq)

    async def _compare_and_set(
        self,
        session: AsyncSession,
        uid: str,
        expected: RecipeStatus,
        status: RecipeStatus,
        error_message: str | None,
        warning_message: str | None,
    ) -> ProvisioningRecipe | None:
        """Moves the recipe from ``expected`` to ``status`` in one statement, if its status
        is still ``expected``; the moved recipe, or None."""
        moved = await session.exec(
            update(ProvisioningRecipe)
            .where(col(ProvisioningRecipe.uid) == uid, col(ProvisioningRecipe.status) == expected)
            .values(
                status=status,
                error_message=error_message,
                warning_message=warning_message,
                updated_at=_now(),
            )
            .returning(ProvisioningRecipe)
            # Only the row the database returns is moved: the session must not apply the
            # change to its copy when the statement matched nothing.
            .execution_options(synchronize_session=False, populate_existing=True)
        )
        return moved.scalars().first()

    async def get(self, uid: str, principal: Principal) -> ProvisioningRecipe | None:
        if not _UID.fullmatch(uid):
            return None
        async with self._sessions() as session:
            found = await session.exec(
                select(ProvisioningRecipe).where(ProvisioningRecipe.uid == uid.lower())
            )
            recipe = found.first()
        return recipe if recipe and principal.may_see(recipe.organization_uid) else None

    def _filtered(
        self, query: SelectOfScalar[_Row], where: RecipeFilter, principal: Principal
    ) -> SelectOfScalar[_Row]:
        if where.organization_uid is not None:
            query = query.where(ProvisioningRecipe.organization_uid == where.organization_uid)
        if not principal.all_organizations:
            query = query.where(
                col(ProvisioningRecipe.organization_uid).in_(principal.organizations)
            )
        if where.statuses:
            query = query.where(col(ProvisioningRecipe.status).in_(where.statuses))
        if where.serial_number is not None:
            query = query.where(ProvisioningRecipe.serial_number == where.serial_number)
        if where.mac_address is not None:
            query = query.where(ProvisioningRecipe.mac_address == where.mac_address)
        if where.device is not None:
            query = query.where(
                ProvisioningRecipe.device_kind == where.device.kind,
                ProvisioningRecipe.device_identifier == where.device.identifier,
            )
        return query

    async def page(
        self,
        where: RecipeFilter,
        principal: Principal,
        size: int,
        after: int | None,
        before: int | None,
        backwards: bool,
    ) -> tuple[list[ProvisioningRecipe], bool]:
        """A keyset page by insertion order, and whether more lie beyond it."""
        query = self._filtered(select(ProvisioningRecipe), where, principal)
        if after is not None:
            query = query.where(col(ProvisioningRecipe.id) > after)
        if before is not None:
            query = query.where(col(ProvisioningRecipe.id) < before)
        order = col(ProvisioningRecipe.id)
        query = query.order_by(order.desc() if backwards else order).limit(size + 1)
        async with self._sessions() as session:
            rows = list((await session.exec(query)).all())
        more = len(rows) > size
        rows = rows[:size]
        return (rows[::-1] if backwards else rows), more

    async def count(self, where: RecipeFilter, principal: Principal) -> int:
        query = self._filtered(
            select(func.count()).select_from(ProvisioningRecipe), where, principal
        )
        async with self._sessions() as session:
            return (await session.exec(query)).one()

    async def events_after(
        self, seq: int, until: int | None = None, limit: int = 500
    ) -> list[OutboxEvent]:
        """Outbox events after ``seq`` (up to ``until``), oldest first."""
        query = select(OutboxEvent).where(col(OutboxEvent.seq) > seq)
        if until is not None:
            query = query.where(col(OutboxEvent.seq) <= until)
        async with self._sessions() as session:
            return list(
                (await session.exec(query.order_by(col(OutboxEvent.seq)).limit(limit))).all()
            )

    async def last_seq(self) -> int:
        async with self._sessions() as session:
            return (await session.exec(select(func.max(OutboxEvent.seq)))).one() or 0

    async def announce(self, publish: Callable[[int], Awaitable[None]]) -> None:
        """``publish``es the last outbox row not yet announced, if any, then marks it and
        every earlier one announced: in one transaction, so that a failed ``publish`` leaves
        them to announce again, and on one connection."""
        unannounced = col(OutboxEvent.published) == False  # noqa: E712
        async with self._sessions() as session, session.begin():
            last = (await session.exec(select(func.max(OutboxEvent.seq)).where(unannounced))).one()
            if last is None:
                return
            await publish(last)
            await session.exec(
                update(OutboxEvent)
                .where(unannounced, col(OutboxEvent.seq) <= last)
                .values(published=True)
            )

    async def prune(self, older_than: datetime) -> None:
        async with self._sessions() as session, session.begin():
            await session.exec(delete(OutboxEvent).where(col(OutboxEvent.created_at) < older_than))
