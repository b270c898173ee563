"""Provisioning recipes and the outbox of their events, as database tables."""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, DateTime, Index, Integer, UniqueConstraint
from sqlmodel import Field, SQLModel

RECIPE_STATUSES = ("Pending", "Applied", "Failed", "Invalid")
"""Status names as the event payload spells them."""


class ProvisioningRecipe(SQLModel, table=True):
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
    owner_ownership_type: str = Field(default="organization", max_length=32)
    owner_organization_uid: str | None = Field(default=None, max_length=32)
    owner_parent_company_uid: str | None = Field(default=None, max_length=32)
    status: str = Field(default="Pending", max_length=16, index=True)
    confirmed_ownership: bool | None = None
    serial_number: str | None = Field(default=None, max_length=128, index=True)
    mac_address: str | None = Field(default=None, max_length=17, index=True)
    model: str | None = Field(default=None, max_length=128)
    brand: str = Field(max_length=128)
    tag_uids: list[str] | None = Field(default=None, sa_column=Column(JSON))
    device_name: str | None = Field(default=None, max_length=256)
    policy_uid: str | None = Field(default=None, max_length=32)
    location_uid: str | None = Field(default=None, max_length=32)
    warning_message: str | None = Field(default=None, max_length=1024)
    error_message: str | None = Field(default=None, max_length=1024)
    originator_account_id: int | None = None
    originator_organization_uid: str | None = Field(default=None, max_length=32)
    originator_policy_uid: str | None = Field(default=None, max_length=32)
    device_kind: str | None = Field(default=None, max_length=16)
    device_identifier: str | None = Field(default=None, max_length=64)
    idempotency_key: str | None = Field(default=None, max_length=128)
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
