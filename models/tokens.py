"""API tokens: credentials this service issues itself, stored only as digests."""

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Column, DateTime, Integer
from sqlmodel import Field, SQLModel

TOKEN_PREFIX = "pgr_"
"""Starts every secret: tells ours from a JWT, and lets secret scanners recognise them."""


class ApiToken(SQLModel, table=True):
    __tablename__ = "api_tokens"

    id: int | None = Field(
        default=None,
        sa_column=Column(
            BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
        ),
    )
    name: str = Field(max_length=128)
    digest: str = Field(max_length=64, unique=True)
    """SHA-256 of the secret, hex: the secret itself is shown once and never stored."""
    organizations: list[str] = Field(sa_column=Column(JSON, nullable=False))
    """Organization uids, or ``["*"]`` for every organization."""
    scopes: list[str] = Field(sa_column=Column(JSON, nullable=False))
    account_id: int | None = None
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    expires_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    last_used_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    """Recorded at most once a minute per token and process, not on every request."""
