"""Database tables and their API schemas (XBase / XCreate / XUpdate / XPublic, table X)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    StrictInt,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from sqlmodel import Field, SQLModel

from app.core.config import LLMProvider


def utcnow() -> datetime:
    """The current time, timezone-aware (UTC)."""
    return datetime.now(UTC)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware (UTC).

    PostgreSQL keeps the offset itself; SQLite stores the text without one and hands back
    naive datetimes, which the API would then emit without a time zone.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, _dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass a timezone-aware one (see utcnow())")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, _dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _timestamp() -> UTCDateTime:
    return UTCDateTime()


# Characters no stored text may hold: C0/C1 controls and DEL (NUL breaks PostgreSQL, CR/LF
# forge log lines), lone surrogates (not encodable as UTF-8), and the Unicode line and
# paragraph separators. Format characters stay allowed: names need ZWNJ, emoji need ZWJ.
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029]")


def has_control_characters(value: str) -> bool:
    """True when `value` holds a character `PlainText` refuses."""
    return _FORBIDDEN.search(value) is not None


def _plain(value: str) -> str:
    if has_control_characters(value):
        raise ValueError("must not contain control characters")
    return value


NO_CONTROL_CHARACTERS = AfterValidator(_plain)

PlainText = Annotated[str, NO_CONTROL_CHARACTERS]
"""A string that may be stored: any text but control characters (422 otherwise)."""


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


# Emails are stored lower-cased, so lookups and the unique index are case-insensitive.
MAX_EMAIL_LENGTH = 255
# Lower-cased before validation, so what is stored is the validator's own normal form.
# Internationalised addresses (RFC 6531) are accepted, so the schema says `idn-email`.
Email = Annotated[
    EmailStr,
    BeforeValidator(_lower),
    WithJsonSchema({"type": "string", "format": "idn-email", "maxLength": MAX_EMAIL_LENGTH}),
]

# ── policies ─────────────────────────────────────────────────────────────────

MAX_POLICY_MODELS = 200
MAX_POLICY_LIMIT = 1_000_000_000
PolicyLimit = Annotated[StrictInt, Field(ge=1, le=MAX_POLICY_LIMIT)]
PolicyModel = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    NO_CONTROL_CHARACTERS,
]


class Policy(SQLModel):
    """What an API key or a user may call, and how much (null: no limit).

    `allowed_models` entries: "<provider>/<model>" (that provider's model), "<provider>/*"
    (any model of that provider) or "<model>" (a model of that name at any provider).
    """

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    allowed_models: list[PolicyModel] | None = Field(
        default=None, max_length=MAX_POLICY_MODELS, description="null: any model"
    )
    requests_per_minute: PolicyLimit | None = None
    tokens_per_minute: PolicyLimit | None = None
    tokens_per_day: PolicyLimit | None = None
    max_concurrent_streams: PolicyLimit | None = None

    @field_validator("allowed_models")
    @classmethod
    def _entries(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        for entry in value:
            model = entry.partition("/")[2] if "/" in entry else entry
            if entry == "*" or (model == "*" and entry.partition("/")[0] not in _PROVIDERS):
                raise ValueError(f"{entry[:50]!r}: a wildcard must follow a provider's name")
        return list(dict.fromkeys(value))


_PROVIDERS = frozenset(p.value for p in LLMProvider)


class PolicyUpdate(SQLModel):
    """`PATCH` body: the new policy, or null to remove it."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    policy: Policy | None


# ── users ────────────────────────────────────────────────────────────────────


class UserBase(SQLModel):
    email: Email = Field(max_length=MAX_EMAIL_LENGTH, unique=True, index=True)
    full_name: PlainText | None = Field(default=None, max_length=255)
    is_active: bool = True
    is_superuser: bool = False


class UserCreate(UserBase):
    password: PlainText = Field(min_length=8, max_length=128)


class UserUpdate(SQLModel):
    email: Email | None = Field(default=None, max_length=255)
    full_name: PlainText | None = Field(default=None, max_length=255)
    password: PlainText | None = Field(default=None, min_length=8, max_length=128)
    is_active: bool | None = None
    is_superuser: bool | None = None
    policy: Policy | None = Field(default=None, description="null: no policy")

    @model_validator(mode="after")
    def _required_columns_are_not_null(self) -> UserUpdate:
        refuse_explicit_nulls(self, ("email", "is_active", "is_superuser"))
        return self


def refuse_explicit_nulls(update: SQLModel, names: tuple[str, ...]) -> None:
    """Omitting a field of an update leaves it as it is; an explicit null for a NOT NULL
    column cannot be stored, so it is refused (a 422) rather than failing the save."""
    nulls = [
        name for name in names if name in update.model_fields_set and getattr(update, name) is None
    ]
    if nulls:
        raise ValueError(f"{', '.join(nulls)} cannot be null: omit it to leave it unchanged")


class UpdatePassword(SQLModel):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: PlainText = Field(min_length=8, max_length=128)


class User(UserBase, table=True):
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    hashed_password: str
    created_at: datetime = Field(default_factory=utcnow, sa_type=_timestamp())
    # Carried in every access token; bumped on a password change or deactivation, which
    # ends every session started before it.
    token_version: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    policy: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)  # a Policy


class UserPublic(UserBase):
    id: uuid.UUID
    created_at: datetime
    policy: Policy | None = None


class UsersPublic(SQLModel):
    data: list[UserPublic]
    count: int


# ── API keys ─────────────────────────────────────────────────────────────────


class ApiKeyBase(SQLModel):
    name: PlainText = Field(min_length=1, max_length=100)


MAX_API_KEY_LIFETIME = timedelta(days=5 * 366)


def _future_expiry(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    now = utcnow()
    if value <= now:
        raise ValueError("must be in the future")
    if value > now + MAX_API_KEY_LIFETIME:
        raise ValueError("must be at most 5 years from now")
    return value


class ApiKeyCreate(ApiKeyBase):
    expires_at: Annotated[AwareDatetime | None, AfterValidator(_future_expiry)] = Field(
        default=None,
        description="When the key stops working (with a time zone; at most 5 years ahead); "
        "null: never",
    )


class ApiKey(ApiKeyBase, table=True):
    __tablename__ = "apikey"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: uuid.UUID = Field(foreign_key="user.id", ondelete="CASCADE", index=True)
    prefix: str = Field(max_length=16)
    key_hash: str = Field(max_length=64, unique=True, index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=_timestamp())
    revoked_at: datetime | None = Field(default=None, sa_type=_timestamp())
    expires_at: datetime | None = Field(default=None, sa_type=_timestamp())
    # Written at most once a minute per key and worker, off the request path.
    last_used_at: datetime | None = Field(default=None, sa_type=_timestamp())
    policy: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)  # a Policy


class ApiKeyPublic(ApiKeyBase):
    id: uuid.UUID
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    expires_at: datetime | None
    last_used_at: datetime | None = Field(description="Accurate to about a minute")
    policy: Policy | None = None


class ApiKeyDetail(ApiKeyPublic):
    user_id: uuid.UUID
    effective_policy: Policy | None = Field(
        default=None, description="This key's policy within its user's: what applies to it"
    )


class ApiKeyCreated(ApiKeyPublic):
    key: str = Field(description="The API key itself. Shown only once: store it now.")


# ── LLM settings ─────────────────────────────────────────────────────────────


ModelName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    NO_CONTROL_CHARACTERS,
]


class ProviderModels(SQLModel):
    """Each provider's model, one `<provider>_model` field per provider, and its embedding
    model (`<provider>_embedding_model`): the one place they are named for the table and the
    API (a new provider adds its fields here, and columns)."""

    lmstudio_model: ModelName | None = Field(default=None, max_length=200)
    openai_model: ModelName | None = Field(default=None, max_length=200)
    openrouter_model: ModelName | None = Field(default=None, max_length=200)
    ollama_model: ModelName | None = Field(default=None, max_length=200)
    bedrock_model: ModelName | None = Field(default=None, max_length=200)
    # The model `embed()` and POST /v1/embeddings use (`"default"`): a setting of its own,
    # since a chat model does not embed and an embedding model does not chat.
    lmstudio_embedding_model: ModelName | None = Field(default=None, max_length=200)
    openai_embedding_model: ModelName | None = Field(default=None, max_length=200)
    openrouter_embedding_model: ModelName | None = Field(default=None, max_length=200)
    ollama_embedding_model: ModelName | None = Field(default=None, max_length=200)
    bedrock_embedding_model: ModelName | None = Field(default=None, max_length=200)


def _provider_shorthand(value: Any) -> Any:
    return {"provider": value} if isinstance(value, str) else value


class FallbackProvider(SQLModel):
    """One provider of the fallback chain; it answers with its own configured model."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    provider: LLMProvider
    allow_cloud: bool = Field(
        default=False,
        description="Fall back to this cloud provider even while the primary is local "
        "(prompts then leave the machine)",
    )


FallbackItem = Annotated[
    FallbackProvider,
    BeforeValidator(_provider_shorthand, json_schema_input_type=LLMProvider | FallbackProvider),
]
"""A fallback entry, or a bare provider name as shorthand for one without `allow_cloud`."""


class LLMSettingsBase(ProviderModels):
    provider: LLMProvider = Field(sa_type=sa.String(32))


class LLMSettings(LLMSettingsBase, table=True):
    """The singleton row (id 1) an admin saves; it wins over the env defaults."""

    __tablename__ = "llmsettings"

    id: int = Field(default=1, primary_key=True)
    version: int = Field(default=0)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=_timestamp())
    updated_by: uuid.UUID | None = Field(default=None, foreign_key="user.id", ondelete="SET NULL")
    # [{"provider": "ollama", "allow_cloud": false}, ...]; empty: the env default applies.
    fallback_providers: list[dict[str, Any]] = Field(
        default_factory=list, sa_type=sa.JSON, sa_column_kwargs={"server_default": "[]"}
    )


class LLMSettingsCreate(ProviderModels):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    provider: LLMProvider
    fallback_providers: list[FallbackItem] = Field(
        default_factory=list,
        description="Providers to try, in order, when the active one fails before answering",
    )


class LLMSettingsUpdate(ProviderModels):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    provider: LLMProvider | None = None
    fallback_providers: list[FallbackItem] = Field(
        default_factory=list,
        description="Providers to try, in order, when the active one fails before answering; "
        "empty: LLM_FALLBACK_PROVIDERS",
    )

    @model_validator(mode="after")
    def _provider_is_not_null(self) -> LLMSettingsUpdate:
        refuse_explicit_nulls(self, ("provider",))
        return self


class ProviderPublic(SQLModel):
    """One provider as the settings show it."""

    provider: LLMProvider
    display_name: str
    model: str | None = Field(description="The model it answers with")
    base_url: str
    key_set: bool
    local: bool = Field(description="Runs on the admin's own machines: no data leaves them")


class LLMSettingsPublic(ProviderModels):
    provider: LLMProvider
    model: str | None = Field(description="The model the active provider uses now")
    lmstudio_base_url: str
    openai_base_url: str
    openai_api_key_set: bool
    fallback_providers: list[FallbackProvider]
    providers: list[ProviderPublic]
    source: Literal["database", "environment"]
    version: int
    updated_at: datetime | None
    warnings: list[str] = Field(
        default=[], description="What the save kept but you may want to fix (saves only)"
    )


class ModelPublic(SQLModel):
    id: str
    type: str | None
    state: str | None
    max_context_length: int | None
    publisher: str | None
    quantization: str | None
    structured_output: bool | None


class ModelsDetail(SQLModel):
    base_url: str | None = Field(description="The provider's address (admins only; else null)")
    models: list[ModelPublic]
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


# ── policy counters ──────────────────────────────────────────────────────────


class PolicyCounter(SQLModel, table=True):
    """A policy's count in one window ("k:<key id>:rpm:<window>" …), shared by workers."""

    __tablename__ = "policycounter"

    key: str = Field(max_length=120, primary_key=True)
    n: int = Field(sa_type=sa.BigInteger)
    expires_at: float = Field(index=True)  # Unix seconds: the row is useless after it


class PolicyLease(SQLModel, table=True):
    """One running stream of a policy's scope; renewed while it runs, void once expired."""

    __tablename__ = "policylease"

    key: str = Field(max_length=120, primary_key=True)
    lease_id: str = Field(max_length=40, primary_key=True)
    expires_at: float = Field(index=True)


# ── usage ledger ─────────────────────────────────────────────────────────────


class UsageEntryBase(SQLModel):
    """One caller-level LLM call: who made it, who served it, what it cost, how it ended."""

    created_at: datetime = Field(default_factory=utcnow, sa_type=_timestamp(), index=True)
    user_id: uuid.UUID | None = None
    api_key_id: uuid.UUID | None = None
    kind: str = Field(max_length=16)  # text, structured, stream, json, tools, embedding, …
    provider: str = Field(max_length=32)
    model: str = Field(max_length=200)
    outcome: str = Field(max_length=64)  # ok | an error kind | cancelled
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    cost: float | None = None


class UsageEntry(UsageEntryBase, table=True):
    """A row of the usage ledger. No foreign keys: a batch must not fail because a user
    or key was deleted after its calls were made."""

    __tablename__ = "usage"
    # A user's or a key's calls in a time range: what reports and limits read.
    __table_args__ = (
        sa.Index("ix_usage_user_id_created_at", "user_id", "created_at"),
        sa.Index("ix_usage_api_key_id_created_at", "api_key_id", "created_at"),
    )

    id: int | None = Field(
        default=None,
        primary_key=True,
        sa_type=sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
    )


UsageGroupBy = Literal["day", "user", "api_key", "provider", "model"]


class UsageGroup(SQLModel):
    """Totals of the calls sharing one value of the report's grouping."""

    key: str | None = Field(description="The group's day, user id, key id, provider or model")
    requests: int
    prompt_tokens: int
    completion_tokens: int
    errors: int = Field(description="Calls that failed (cancelled ones are not errors)")
    cost: float | None = Field(description="Summed where the provider reports it; else null")


class UsageTotals(SQLModel):
    """Totals over the whole report."""

    requests: int
    prompt_tokens: int
    completion_tokens: int
    errors: int
    cost: float | None


class UsagePublic(SQLModel):
    """A usage report: calls in [since, until) grouped by `group_by`, with totals."""

    group_by: UsageGroupBy
    since: datetime
    until: datetime
    groups: list[UsageGroup]
    totals: UsageTotals


# ── audit trail ──────────────────────────────────────────────────────────────


class AuditAction(StrEnum):
    """What an audit event records."""

    USER_CREATE = "user.create"
    USER_UPDATE = "user.update"
    USER_DEACTIVATE = "user.deactivate"
    USER_PASSWORD_CHANGE = "user.password_change"  # noqa: S105 - an action's name
    API_KEY_CREATE = "api_key.create"
    API_KEY_REVOKE = "api_key.revoke"
    API_KEY_POLICY = "api_key.policy"
    LLM_SETTINGS_CREATE = "llm_settings.create"
    LLM_SETTINGS_UPDATE = "llm_settings.update"


class AuditTarget(StrEnum):
    """The kind of thing an audit event changed."""

    USER = "user"
    API_KEY = "api_key"
    LLM_SETTINGS = "llm_settings"


class AuditEventBase(SQLModel):
    at: datetime = Field(default_factory=utcnow, sa_type=_timestamp(), index=True)
    actor_id: uuid.UUID | None = Field(default=None, index=True)  # None: the command line
    actor_email: str | None = Field(default=None, max_length=MAX_EMAIL_LENGTH)
    action: AuditAction = Field(sa_type=sa.String(64), index=True)
    target_type: AuditTarget = Field(sa_type=sa.String(32), index=True)
    target_id: str = Field(max_length=64)
    # {field: [before, after]}; secrets appear only as "password changed".
    changes: dict[str, list[Any]] = Field(default_factory=dict, sa_type=sa.JSON)


class AuditEvent(AuditEventBase, table=True):
    """Who changed what, when, from what to what; written in the change's transaction."""

    __tablename__ = "auditevent"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)


class AuditEventPublic(AuditEventBase):
    id: uuid.UUID


class AuditEventsPublic(SQLModel):
    data: list[AuditEventPublic]
    count: int


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
