"""Database tables and their API schemas (XBase / XCreate / XUpdate / XPublic, table X)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from pydantic import EmailStr
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    """The current time, timezone-aware (UTC)."""
    return datetime.now(UTC)


def _timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


# ── users ────────────────────────────────────────────────────────────────────


class UserBase(SQLModel):
    email: EmailStr = Field(max_length=255, unique=True, index=True)
    full_name: str | None = Field(default=None, max_length=255)
    is_active: bool = True
    is_superuser: bool = False


class UserCreate(UserBase):
    password: str = Field(min_length=8, max_length=128)


class UserUpdate(SQLModel):
    email: EmailStr | None = Field(default=None, max_length=255)
    full_name: str | None = Field(default=None, max_length=255)
    password: str | None = Field(default=None, min_length=8, max_length=128)
    is_active: bool | None = None
    is_superuser: bool | None = None


class User(UserBase, table=True):
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    hashed_password: str
    created_at: datetime = Field(default_factory=utcnow, sa_type=_timestamp())


class UserPublic(UserBase):
    id: uuid.UUID
    created_at: datetime


class UsersPublic(SQLModel):
    data: list[UserPublic]
    count: int


# ── API keys ─────────────────────────────────────────────────────────────────


class ApiKeyBase(SQLModel):
    name: str = Field(min_length=1, max_length=100)


class ApiKeyCreate(ApiKeyBase):
    pass


class ApiKey(ApiKeyBase, table=True):
    __tablename__ = "apikey"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: uuid.UUID = Field(foreign_key="user.id", ondelete="CASCADE", index=True)
    prefix: str = Field(max_length=16)
    key_hash: str = Field(max_length=64, unique=True, index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=_timestamp())
    revoked_at: datetime | None = Field(default=None, sa_type=_timestamp())


class ApiKeyPublic(ApiKeyBase):
    id: uuid.UUID
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyPublic):
    key: str = Field(description="The API key itself. Shown only once: store it now.")


# ── auth ─────────────────────────────────────────────────────────────────────


class Token(SQLModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105


class Message(SQLModel):
    message: str
