"""Recipes and their outbox

Revision ID: 0001
Revises:
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "outbox_events",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("event_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("type", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("organization_uid", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("recipe_uid", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("published", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("event_id"),
    )
    with op.batch_alter_table("outbox_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_outbox_events_organization_uid"), ["organization_uid"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_outbox_events_published"), ["published"], unique=False)

    op.create_table(
        "provisioning_recipes",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("uid", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("organization_uid", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column(
            "owner_ownership_type", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False
        ),
        sa.Column(
            "owner_organization_uid", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True
        ),
        sa.Column(
            "owner_parent_company_uid", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True
        ),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("confirmed_ownership", sa.Boolean(), nullable=True),
        sa.Column("serial_number", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column("mac_address", sqlmodel.sql.sqltypes.AutoString(length=17), nullable=True),
        sa.Column("model", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column("brand", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("tag_uids", sa.JSON(), nullable=True),
        sa.Column("device_name", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=True),
        sa.Column("policy_uid", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("location_uid", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("warning_message", sqlmodel.sql.sqltypes.AutoString(length=1024), nullable=True),
        sa.Column("error_message", sqlmodel.sql.sqltypes.AutoString(length=1024), nullable=True),
        sa.Column("originator_account_id", sa.Integer(), nullable=True),
        sa.Column(
            "originator_organization_uid",
            sqlmodel.sql.sqltypes.AutoString(length=32),
            nullable=True,
        ),
        sa.Column(
            "originator_policy_uid", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True
        ),
        sa.Column("device_kind", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
        sa.Column("device_identifier", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("idempotency_key", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column("idempotency_digest", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key"),
    )
    with op.batch_alter_table("provisioning_recipes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_provisioning_recipes_mac_address"), ["mac_address"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_provisioning_recipes_serial_number"), ["serial_number"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_provisioning_recipes_status"), ["status"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_provisioning_recipes_uid"), ["uid"], unique=True)
        batch_op.create_index(
            "ix_recipes_device", ["device_kind", "device_identifier", "id"], unique=False
        )
        batch_op.create_index("ix_recipes_org_id", ["organization_uid", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("provisioning_recipes", schema=None) as batch_op:
        batch_op.drop_index("ix_recipes_org_id")
        batch_op.drop_index("ix_recipes_device")
        batch_op.drop_index(batch_op.f("ix_provisioning_recipes_uid"))
        batch_op.drop_index(batch_op.f("ix_provisioning_recipes_status"))
        batch_op.drop_index(batch_op.f("ix_provisioning_recipes_serial_number"))
        batch_op.drop_index(batch_op.f("ix_provisioning_recipes_mac_address"))

    op.drop_table("provisioning_recipes")
    with op.batch_alter_table("outbox_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_events_published"))
        batch_op.drop_index(batch_op.f("ix_outbox_events_organization_uid"))

    op.drop_table("outbox_events")
