"""Who is calling, and what callers may be allowed to do."""

from dataclasses import dataclass

HISTORY_READ = "history:read"
RECIPES_READ = "recipes:read"
RECIPES_WRITE = "recipes:write"
REPORTS_READ = "reports:read"
REPORTS_WRITE = "reports:write"

SCOPES: dict[str, str] = {
    HISTORY_READ: "devices and their provisioning histories (GraphQL and the history CSV)",
    RECIPES_READ: "recipes of the caller's organizations, and their events (subscriptions)",
    RECIPES_WRITE: "create recipes and change their status, in the caller's organizations",
    REPORTS_READ: "run reports in the request, read the caller's report jobs and their CSV",
    REPORTS_WRITE: "start and cancel report jobs",
}
"""Every scope a credential can carry, with what it grants."""

ALL_ORGANIZATIONS = "*"
"""As a credential's organization: every organization (operators and local development)."""


@dataclass(frozen=True)
class Principal:
    subject: str
    """Stable and unique per caller: report jobs belong to it, rate limits count by it."""
    organizations: frozenset[str]
    """Organization uids whose recipes, events and subscriptions this caller may see."""
    scopes: frozenset[str]
    account_id: int | None = None
    """Set as the ``originator.accountId`` of the events this caller's mutations emit."""
    all_organizations: bool = False
    """A credential issued for ``ALL_ORGANIZATIONS``."""

    def __post_init__(self) -> None:
        # Recipes store organization uids in lower case; credentials may be typed either way.
        object.__setattr__(
            self, "organizations", frozenset(uid.lower() for uid in self.organizations)
        )

    def may_see(self, organization_uid: str | None) -> bool:
        if self.all_organizations:
            return True
        return organization_uid is not None and organization_uid in self.organizations


LOCAL_DEVELOPER = Principal(
    subject="local-developer",
    organizations=frozenset(),
    scopes=frozenset(SCOPES),
    all_organizations=True,
)
"""Only where authentication is switched off, which only a loopback bind allows."""

ANONYMOUS = Principal(subject="anonymous", organizations=frozenset(), scopes=frozenset())
"""A caller not (yet) authenticated: may do nothing. A WebSocket is this until its
``connection_init`` authenticates it; the GraphiQL page is served to it."""
