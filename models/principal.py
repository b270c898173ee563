"""Who is calling: carried by every request, so authorization fills in, not retrofits."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    subject: str
    organizations: frozenset[str]
    """Organization uids whose recipes, events and jobs this caller may see."""
    scopes: frozenset[str]
    account_id: int | None = None
    all_organizations: bool = False
    """True only for the local development principal, until authentication exists."""


LOCAL_DEVELOPER = Principal(
    subject="local-developer",
    organizations=frozenset(),
    scopes=frozenset({"history:read"}),
    all_organizations=True,
)
