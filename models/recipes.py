"""Provisioning recipes and the outbox of their events, as database tables."""

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, DateTime, Index, Integer, UniqueConstraint
from sqlalchemy import Enum as SqlEnum
from sqlmodel import Field, SQLModel

from models.recipe_fields import OwnershipType, RecipeFields, RecipeStatus

MESSAGE_LENGTH = 1024
"""The longest error or warning message a recipe keeps."""
IDEMPOTENCY_KEY_LENGTH = 128


def _by_value(enum: type[StrEnum], length: int) -> SqlEnum:
    """A VARCHAR column holding the members' values ("Pending"; SQLAlchemy would store the
    names), read back as members."""
    return SqlEnum(
        enum, native_enum=False, length=length, values_callable=lambda e: [m.value for m in e]
    )


class ProvisioningRecipe(RecipeFields, table=True):
    """A recipe: its plain fields (``RecipeFields``) and these."""

    __tablename__ = "provisioning_recipes"
    __table_args__ = (
        Index("ix_recipes_org_id", "organization_uid", "id"),
        Index("ix_recipes_device", "device_kind", "device_identifier", "id"),
        # A key is its caller's own, per organization: another tenant's (or credential's)
        # key can neither replay nor block this one.
        UniqueConstraint(
            "organization_uid",
            "idempotency_subject",
            "idempotency_key",
            name="uq_recipes_idempotency",
        ),
    )

    id: int | None = Field(
        default=None,
        sa_column=Column(
            BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
        ),
    )
    """Insertion order: the key of keyset cursors."""
    uid: str = Field(max_length=32, unique=True, index=True)
    organization_uid: str = Field(max_length=32)
    owner_ownership_type: OwnershipType = Field(
        default=OwnershipType.ORGANIZATION, sa_type=_by_value(OwnershipType, 32)
    )
    owner_organization_uid: str | None = Field(default=None, max_length=32)
    owner_parent_company_uid: str | None = Field(default=None, max_length=32)
    status: RecipeStatus = Field(
        default=RecipeStatus.PENDING, sa_type=_by_value(RecipeStatus, 16), index=True
    )
    warning_message: str | None = Field(default=None, max_length=MESSAGE_LENGTH)
    error_message: str | None = Field(default=None, max_length=MESSAGE_LENGTH)
    originator_account_id: int | None = None
    originator_organization_uid: str | None = Field(default=None, max_length=32)
    originator_policy_uid: str | None = Field(default=None, max_length=32)
    device_kind: str | None = Field(default=None, max_length=16)
    device_identifier: str | None = Field(default=None, max_length=64)
    idempotency_key: str | None = Field(default=None, max_length=IDEMPOTENCY_KEY_LENGTH)
    idempotency_subject: str | None = Field(default=None, max_length=128)
    """The subject of the principal that used the key (null on rows older than the scope)."""
    idempotency_digest: str | None = Field(default=None, max_length=64)
    """A digest of the creating input, to tell a retry from a reuse of the key."""
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class OutboxEvent(SQLModel, table=True):
    """Every emitted event, in emission order: what subscribers receive and replay."""

    __tablename__ = "outbox_events"

    seq: int | None = Field(
        default=None,
        sa_column=Column(
            BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
        ),
    )
    event_id: str = Field(max_length=40, unique=True)
    type: str = Field(max_length=64)
    organization_uid: str = Field(max_length=32, index=True)
    recipe_uid: str = Field(max_length=32)
    document: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    """The event exactly as emitted (the seed document's JSON shape)."""
    published: bool = Field(default=False, index=True)
    """Whether the other replicas have been told of it through the broker."""
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
