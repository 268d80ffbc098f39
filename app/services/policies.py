"""Admin-set policies of users and API keys: saving them (audited), and what applies to a key.

A key's policy narrows its user's, never widens it: at call time both are enforced (see
`app.services.llm.policy`); `effective` shows the result as one policy.
"""

from __future__ import annotations

from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from app.models import ApiKey, AuditAction, AuditTarget, Policy, User
from app.services import audit
from app.services.credential_cache import credential_cache, notify_credentials_changed

_LIMITS = ("requests_per_minute", "tokens_per_minute", "tokens_per_day", "max_concurrent_streams")


def stored(policy: Policy | None) -> dict[str, Any] | None:
    """The column's value for `policy` (None when it limits nothing)."""
    if policy is None:
        return None
    data = policy.model_dump()
    return data if any(v is not None for v in data.values()) else None


async def set_key_policy(
    session: AsyncSession, key: ApiKey, policy: Policy | None, *, actor: User
) -> None:
    """Save a key's policy (None removes it) with an audit event, and make every worker
    apply it at once (their cached credentials of the key's user are dropped). A user's
    policy is saved by `app.services.users.update_user`, which does the same."""
    before, after = key.policy, stored(policy)
    key.policy = after
    session.add(key)
    changes = audit.diff({"policy": before}, {"policy": after}, ("policy",))
    audit.record(session, actor, AuditAction.API_KEY_POLICY, AuditTarget.API_KEY, key.id, changes)
    await notify_credentials_changed(session, key.user_id)
    await session.commit()
    credential_cache.forget_user(key.user_id)
    await session.refresh(key)


def effective(user: dict[str, Any] | None, key: dict[str, Any] | None) -> Policy | None:
    """The policy a key's calls are held to: its own within its user's."""
    if user is None or key is None:
        chosen = user if key is None else key
        return None if chosen is None else Policy.model_validate(chosen)
    limits = {name: _least(user.get(name), key.get(name)) for name in _LIMITS}
    allowed = _meet_lists(user.get("allowed_models"), key.get("allowed_models"))
    return Policy(allowed_models=allowed, **limits)


def _least(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _split(entry: str) -> tuple[str | None, str]:
    from app.services.llm.policy import split_entry

    return split_entry(entry)


def _meet_lists(a: list[str] | None, b: list[str] | None) -> list[str] | None:
    if a is None or b is None:
        return b if a is None else a
    met = (_meet(x, y) for x in a for y in b)
    return list(dict.fromkeys(m for m in met if m is not None))


def _meet(a: str, b: str) -> str | None:
    """The entry allowing exactly what both `a` and `b` allow, if anything."""
    (pa, ma), (pb, mb) = _split(a), _split(b)
    if pa is not None and pb is not None and pa != pb:
        return None
    if ma != "*" and mb != "*" and ma != mb:
        return None
    provider = pa or pb
    model = mb if ma == "*" else ma
    return model if provider is None else f"{provider}/{model}"
