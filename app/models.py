"""Database tables and their API schemas (XBase / XCreate / XUpdate / XPublic, table X)."""

from __future__ import annotations

import unicodedata
import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

import sqlalchemy as sa
from pydantic import AfterValidator, ConfigDict, EmailStr, StringConstraints
from sqlmodel import Field, SQLModel

from app.core.config import LLMProvider


def utcnow() -> datetime:
    """The current time, timezone-aware (UTC)."""
    return datetime.now(UTC)


def _timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


# Emails are stored lower-cased, so lookups and the unique index are case-insensitive.
Email = Annotated[EmailStr, AfterValidator(str.lower)]
MAX_EMAIL_LENGTH = 255

# ── users ────────────────────────────────────────────────────────────────────


class UserBase(SQLModel):
    email: Email = Field(max_length=MAX_EMAIL_LENGTH, unique=True, index=True)
    full_name: str | None = Field(default=None, max_length=255)
    is_active: bool = True
    is_superuser: bool = False


class UserCreate(UserBase):
    password: str = Field(min_length=8, max_length=128)


class UserUpdate(SQLModel):
    email: Email | None = Field(default=None, max_length=255)
    full_name: str | None = Field(default=None, max_length=255)
    password: str | None = Field(default=None, min_length=8, max_length=128)
    is_active: bool | None = None
    is_superuser: bool | None = None


class UpdatePassword(SQLModel):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=8, max_length=128)


class User(UserBase, table=True):
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    hashed_password: str
    created_at: datetime = Field(default_factory=utcnow, sa_type=_timestamp())
    # Carried in every access token; bumped on a password change or deactivation, which
    # ends every session started before it.
    token_version: int = Field(default=0, sa_column_kwargs={"server_default": "0"})


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


# ── LLM settings ─────────────────────────────────────────────────────────────


def _printable(value: str) -> str:
    if any(unicodedata.category(char).startswith("C") for char in value):
        raise ValueError("must not contain control characters")
    return value


ModelName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(_printable),
]


class LLMSettingsBase(SQLModel):
    provider: LLMProvider = Field(sa_type=sa.String(32))
    lmstudio_model: str | None = Field(default=None, max_length=200)
    openai_model: str | None = Field(default=None, max_length=200)


class LLMSettings(LLMSettingsBase, table=True):
    """The singleton row (id 1) an admin saves; it wins over the env defaults."""

    __tablename__ = "llmsettings"

    id: int = Field(default=1, primary_key=True)
    version: int = Field(default=0)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=_timestamp())
    updated_by: uuid.UUID | None = Field(default=None, foreign_key="user.id", ondelete="SET NULL")


class LLMSettingsCreate(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    provider: LLMProvider
    lmstudio_model: ModelName | None = None
    openai_model: ModelName | None = None


class LLMSettingsUpdate(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    provider: LLMProvider | None = None
    lmstudio_model: ModelName | None = None
    openai_model: ModelName | None = None


class LLMSettingsPublic(SQLModel):
    provider: LLMProvider
    model: str | None = Field(description="The model the active provider uses now")
    lmstudio_model: str | None
    openai_model: str | None
    lmstudio_base_url: str
    openai_base_url: str
    openai_api_key_set: bool
    source: Literal["database", "environment"]
    version: int
    updated_at: datetime | None


class LMStudioModelPublic(SQLModel):
    id: str
    type: str | None
    state: str | None
    max_context_length: int | None
    publisher: str | None
    quantization: str | None


class LMStudioModelsDetail(SQLModel):
    base_url: str | None = Field(description="LM Studio's address (admins only; else null)")
    models: list[LMStudioModelPublic]
    loaded: list[str]
    message: str | None = Field(description="Why nothing can answer yet, when that is so")


# ── login throttle ───────────────────────────────────────────────────────────


class LoginThrottle(SQLModel, table=True):
    """Login attempts of one account or one client in the current window."""

    __tablename__ = "loginthrottle"

    key: str = Field(max_length=300, primary_key=True)  # "account:<email>" / "client:<ip>"
    attempts: int  # failed ones, plus any still being checked
    # Unix seconds: compared in SQL on both backends without time-zone conversions.
    window_ends_at: float = Field(index=True)


# ── auth ─────────────────────────────────────────────────────────────────────


class Token(SQLModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105


# ── LM Studio model management (admin page) ──────────────────────────────────


class LMStudioLoadRequest(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    model: ModelName
    context_length: int | None = Field(
        default=None, ge=256, le=1_048_576, description="Tokens of context to load with"
    )
    ttl: int | None = Field(
        default=None,
        ge=60,
        le=7 * 24 * 3600,
        description="Seconds of idleness after which LM Studio unloads the model",
    )


class LMStudioUnloadRequest(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    model: ModelName
