"""API tokens: issued, listed, revoked and verified.

A secret is ``pgr_`` and 43 random URL-safe characters (256 bits), shown once when issued;
the table keeps only its SHA-256. Such secrets cannot be guessed, so an unsalted digest
is enough, and looking a token up by its digest gives a timing attacker nothing to learn.
"""

import hashlib
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models.principal import ALL_ORGANIZATIONS, SCOPES, Principal
from models.tokens import TOKEN_PREFIX, ApiToken
from resolvers.auth import Unauthenticated

READ_SCOPES = tuple(scope for scope in SCOPES if scope.endswith(":read"))
_UID = re.compile(r"[0-9a-f]{32}")


class InvalidTokenRequest(ValueError):
    pass


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    secret: str
    """Shown once to whoever asked for the token, and kept nowhere."""


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes for what was stored as UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def state(token: ApiToken, now: datetime | None = None) -> str:
    """``active``, ``revoked`` or ``expired``."""
    if token.revoked_at is not None:
        return "revoked"
    if token.expires_at is not None and _aware(token.expires_at) <= (now or _now()):
        return "expired"
    return "active"


def principal(token: ApiToken) -> Principal:
    return Principal(
        subject=f"token:{token.id}",
        organizations=frozenset(token.organizations) - {ALL_ORGANIZATIONS},
        scopes=frozenset(token.scopes),
        account_id=token.account_id,
        all_organizations=ALL_ORGANIZATIONS in token.organizations,
    )


def _organizations(values: Iterable[str]) -> list[str]:
    organizations = sorted({value.strip().lower() for value in values})
    if not organizations:
        raise InvalidTokenRequest("A token needs at least one organization (or '*').")
    if ALL_ORGANIZATIONS in organizations:
        return [ALL_ORGANIZATIONS]
    wrong = [uid for uid in organizations if not _UID.fullmatch(uid)]
    if wrong:
        raise InvalidTokenRequest(
            f"Organizations are 32 hexadecimal characters, or '*': not {', '.join(wrong)}."
        )
    return organizations


def _scopes(values: Iterable[str]) -> list[str]:
    scopes = sorted(set(values))
    if not scopes:
        raise InvalidTokenRequest("A token needs at least one scope.")
    unknown = [scope for scope in scopes if scope not in SCOPES]
    if unknown:
        raise InvalidTokenRequest(
            f"Unknown scope {', '.join(unknown)}; the scopes are {', '.join(SCOPES)}."
        )
    return scopes


class TokenStore:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        touch_every: timedelta = timedelta(minutes=1),
    ) -> None:
        self._sessions = sessions
        self._touch_every_s = touch_every.total_seconds()
        self._touched: dict[int, float] = {}

    async def create(
        self,
        name: str,
        organizations: Iterable[str],
        scopes: Iterable[str],
        *,
        account_id: int | None = None,
        expires_in: timedelta | None = None,
    ) -> IssuedToken:
        name = name.strip()
        if not name or len(name) > 128:
            raise InvalidTokenRequest("A token's name is 1 to 128 characters.")
        if expires_in is not None and expires_in <= timedelta(0):
            raise InvalidTokenRequest("A token's lifetime must be positive.")
        return await self._issue(
            name, _organizations(organizations), _scopes(scopes), account_id, expires_in
        )

    async def _issue(
        self,
        name: str,
        organizations: list[str],
        scopes: list[str],
        account_id: int | None,
        expires_in: timedelta | None,
    ) -> IssuedToken:
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = _now()
        token = ApiToken(
            name=name,
            digest=_digest(secret),
            organizations=organizations,
            scopes=scopes,
            account_id=account_id,
            created_at=now,
            expires_at=now + expires_in if expires_in else None,
        )
        async with self._sessions() as session, session.begin():
            session.add(token)
        return IssuedToken(token, secret)

    async def all(self) -> list[ApiToken]:
        async with self._sessions() as session:
            return list((await session.exec(select(ApiToken).order_by(col(ApiToken.id)))).all())

    async def revoke(self, token_id: int) -> ApiToken | None:
        """Revokes the token (a second time keeps the first time); None if there is none."""
        async with self._sessions() as session, session.begin():
            token = await session.get(ApiToken, token_id, with_for_update=True)
            if token is not None and token.revoked_at is None:
                token.revoked_at = _now()
                session.add(token)
            return token

    async def verify(self, credential: str) -> Principal:
        now = _now()
        async with self._sessions() as session:
            token = await self._usable(session, credential, now)
            assert token.id is not None
            # Use is recorded once a minute at most: a write per request would make every
            # read a write, and a minute is as fine as "last used" needs to be.
            touched = self._touched.get(token.id)
            if touched is None or time.monotonic() - touched >= self._touch_every_s:
                self._touched[token.id] = time.monotonic()
                token.last_used_at = now
                session.add(token)
                await session.commit()
        return principal(token)

    async def _usable(self, session: AsyncSession, credential: str, now: datetime) -> ApiToken:
        found = await session.exec(select(ApiToken).where(ApiToken.digest == _digest(credential)))
        token = found.first()
        if token is None:
            raise Unauthenticated("The token is not valid.")
        match state(token, now):
            case "revoked":
                raise Unauthenticated("The token has been revoked.")
            case "expired":
                raise Unauthenticated("The token has expired.")
        return token
