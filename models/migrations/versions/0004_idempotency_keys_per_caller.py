"""Idempotency keys per organization and caller

Revision ID: 0004
Revises: 0003

A key was unique across the whole table, so one tenant could probe and block another's
keys. It is now unique per (organization, subject of the caller, key). Rows written before
have no subject: their keys no longer match any caller's, so a retry that straddles the
upgrade creates the recipe anew.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# 0001 left the constraint unnamed: PostgreSQL named it itself, SQLite keeps no name, so
# batch mode gets a convention to address it by when it copies the table.
_NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}
_SCOPED = "uq_recipes_idempotency"


def _global_key_constraint() -> str:
    if op.get_bind().dialect.name == "postgresql":
        return "provisioning_recipes_idempotency_key_key"
    return "uq_provisioning_recipes_idempotency_key"


def upgrade() -> None:
    with op.batch_alter_table("provisioning_recipes", naming_convention=_NAMING) as batch_op:
        batch_op.add_column(
            sa.Column(
                "idempotency_subject", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True
            )
        )
        batch_op.drop_constraint(_global_key_constraint(), type_="unique")
        batch_op.create_unique_constraint(
            _SCOPED, ["organization_uid", "idempotency_subject", "idempotency_key"]
        )


def downgrade() -> None:
    # Fails while two organizations or callers hold the same key: the global constraint
    # cannot hold them both.
    with op.batch_alter_table("provisioning_recipes", naming_convention=_NAMING) as batch_op:
        batch_op.drop_constraint(_SCOPED, type_="unique")
        batch_op.create_unique_constraint(_global_key_constraint(), ["idempotency_key"])
        batch_op.drop_column("idempotency_subject")
