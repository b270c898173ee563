"""Development token rows revoked

The development token is now made at each start and kept in that process's memory only.
Databases from earlier versions still hold its row: every scope, every organization,
no expiry, valid on any replica sharing the database. Revoke it.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "UPDATE api_tokens SET revoked_at = CURRENT_TIMESTAMP "
        "WHERE name = 'development' AND revoked_at IS NULL"
    )


def downgrade() -> None:
    """A revoked token stays revoked: nothing to undo."""
