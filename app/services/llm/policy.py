"""Enforcing the caller's policies (their API key's and their user's) on every LLM call.

Authentication hands the caller's policies over as `Scope`s (with the `Caller`, see
`ledger.py`); a caller without any pays nothing here. For each caller-level call:

- every provider attempt first checks the model against each scope's allow-list (403,
  `LLMPolicyError`); a fallback chain skips the entries it may not call;
- the call is admitted once (`admit`): requests per minute are taken, tokens per minute and
  per day checked against what is already counted, and a stream takes a lease per scope
  that limits concurrent streams (429, `LLMLimitError`, naming the limit);
- when it ends (`settle`), the tokens it spent are counted and its leases given back.

Each limit is kept per scope, the key's and the user's separately, so that a key is never
wider than its user: the user's counts include every key of theirs and their JWT calls.
Windows are fixed (a UTC minute, a UTC day). Tokens are known only after a call, so a call
admitted under a token limit may take the count past it by its own size (and by the size of
calls running at the same time).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.core.config import LLMProvider
from app.services.llm.counters import LEASE_SECONDS, get_counters
from app.services.llm.errors import LLMLimitError, LLMPolicyError, LLMPolicyStoreError
from app.services.llm.redis_wire import RedisError

if TYPE_CHECKING:
    from app.services.llm.ledger import Caller, CallRecord

logger = logging.getLogger("app.services.llm")

_PROVIDERS = frozenset(p.value for p in LLMProvider)
MINUTE, DAY = 60, 86_400
SHOWN = 10  # allow-list entries a refusal names (a list may hold 200)


def split_entry(entry: str) -> tuple[str | None, str]:
    """An allow-list entry as (provider or None for any, model or "*")."""
    first, slash, rest = entry.partition("/")
    if slash and first in _PROVIDERS:
        return first, rest
    return None, entry


@dataclass(frozen=True, slots=True)
class Scope:
    """One policy as enforced: whose it is (`label`, for messages) and its counters' key."""

    label: str
    key: str
    allowed: frozenset[str] | None
    requests_per_minute: int | None
    tokens_per_minute: int | None
    tokens_per_day: int | None
    max_concurrent_streams: int | None

    def allows(self, provider: str, model: str) -> bool:
        """Whether this scope may call `provider`'s `model`."""
        allowed = self.allowed
        return (
            allowed is None
            or model in allowed
            or f"{provider}/{model}" in allowed
            or f"{provider}/*" in allowed
        )


_compiled: dict[int, tuple[dict[str, Any], Scope]] = {}
_MAX_COMPILED = 10_000


def scope_of(policy: dict[str, Any] | None, label: str, key: str) -> Scope | None:
    """The enforceable form of a stored policy (None: no policy). Compiled once per stored
    value: cached rows are shared snapshots, so the dict's identity names the value."""
    if policy is None:
        return None
    found = _compiled.get(id(policy))
    if found is not None and found[0] is policy:
        return found[1]
    allowed = policy.get("allowed_models")
    scope = Scope(
        label,
        key,
        None if allowed is None else frozenset(allowed),
        policy.get("requests_per_minute"),
        policy.get("tokens_per_minute"),
        policy.get("tokens_per_day"),
        policy.get("max_concurrent_streams"),
    )
    if len(_compiled) >= _MAX_COMPILED:
        _compiled.clear()
    _compiled[id(policy)] = (policy, scope)  # the dict is kept: its id is not reused
    return scope


def may_call(caller: Caller | None, provider: str, model: str) -> bool:
    """Whether `caller`'s policies allow `provider`'s `model` (always, without a caller)."""
    return caller is None or all(s.allows(provider, model) for s in caller.scopes)


def check_model(caller: Caller | None, provider: str, model: str) -> None:
    """Raise `LLMPolicyError` (403) unless `caller` may call `provider`'s `model`."""
    if caller is None:
        return
    for scope in caller.scopes:
        if not scope.allows(provider, model):
            entries = sorted(scope.allowed or ())
            allowed = ", ".join(entries[:SHOWN]) or "no model"
            if len(entries) > SHOWN:
                allowed += f", and {len(entries) - SHOWN} more"
            raise LLMPolicyError(
                f"The policy of {scope.label} does not allow {provider}/{model} "
                f"(allowed: {allowed})",
                provider=provider,
            )


async def admit(record: CallRecord, provider: str, model: str) -> None:
    """Before an attempt of `record`'s call at `provider`'s `model`: the allow-lists, then
    (once per call) the request, token and stream limits."""
    caller = record.caller
    if caller is None or not caller.scopes:
        return
    check_model(caller, provider, model)
    if record.admitted:
        return
    record.admitted = True
    for scope in caller.scopes:  # the count of this scope's last call here comes first
        last = _last_settle.get(scope.key)
        if last is not None and not last.done() and last.get_loop() is asyncio.get_running_loop():
            await asyncio.wait((last,))
    now = time.time()
    reads: list[tuple[str, int]] = []
    takes: list[tuple[str, int, float]] = []
    refusals: list[tuple[str, Scope, int, float]] = []  # what each check's refusal says
    for scope in caller.scopes:
        for name, limit, length in (
            ("tokens_per_minute", scope.tokens_per_minute, MINUTE),
            ("tokens_per_day", scope.tokens_per_day, DAY),
        ):
            if limit is not None:
                window = int(now // length)
                reads.append((_tokens_key(scope, name, window), limit))
                refusals.append((name, scope, limit, (window + 1) * length - now))
    for scope in caller.scopes:
        if (limit := scope.requests_per_minute) is not None:
            window = int(now // MINUTE)
            takes.append((f"{scope.key}:rpm:{window}", limit, (window + 1) * MINUTE))
            refusals.append(("requests_per_minute", scope, limit, (window + 1) * MINUTE - now))
    try:
        if reads or takes:
            refused = await get_counters().admit(reads, takes)
            if refused is not None:
                raise _reached(*refusals[refused])
        if (record.kind or "").endswith("stream"):  # "stream", "tools_stream"
            await _lease_streams(record, caller)
    except RedisError as exc:  # fail closed: a limit that cannot be counted is not checked
        raise LLMPolicyStoreError(f"Policy limits cannot be checked: {exc}") from exc


async def _lease_streams(record: CallRecord, caller: Caller) -> None:
    for scope in caller.scopes:
        if (limit := scope.max_concurrent_streams) is not None:
            lease = (f"{scope.key}:streams", uuid.uuid4().hex)
            if not await get_counters().lease(*lease, limit):
                raise _reached("max_concurrent_streams", scope, limit, 1.0)
            record.leases.append(lease)
            _live.add(lease)
    if record.leases:
        _keep_renewing()


def settle(record: CallRecord) -> None:
    """When `record`'s call ended: count its tokens and give its leases back (in the
    background; the next `admit` of the same scope in this process waits for it)."""
    caller = record.caller
    if caller is None or not record.admitted:
        return
    tokens = record.prompt_tokens + record.completion_tokens
    for lease in record.leases:
        _live.discard(lease)
    now = time.time()
    adds = [
        (_tokens_key(scope, name, int(now // length)), tokens, (now // length + 1) * length)
        for scope in caller.scopes
        for name, limit, length in (
            ("tokens_per_minute", scope.tokens_per_minute, MINUTE),
            ("tokens_per_day", scope.tokens_per_day, DAY),
        )
        if limit is not None and tokens
    ]
    if record.leases:
        task = asyncio.get_running_loop().create_task(_release(record.leases))
        _waits_for(caller, task)
    if adds:
        _waits_for(caller, _count_tokens(adds))


def _waits_for(caller: Caller, task: asyncio.Task[None]) -> None:
    for scope in caller.scopes:
        _last_settle[scope.key] = task
    task.add_done_callback(lambda done: _forget_settle(caller, done))


def _forget_settle(caller: Caller, task: asyncio.Task[None]) -> None:
    for scope in caller.scopes:
        if _last_settle.get(scope.key) is task:
            del _last_settle[scope.key]


def _count_tokens(adds: list[tuple[str, int, float]]) -> asyncio.Task[None]:
    """Queue `adds` for the next write, which carries every count queued until it starts
    (one round trip for many calls under load); the task that writes them."""
    global _writer
    for key, amount, expires in adds:
        queued = _unwritten.get(key)
        _unwritten[key] = (amount + (queued[0] if queued else 0), expires)
    loop = asyncio.get_running_loop()
    if _writer is None or _writer.done() or _writer.get_loop() is not loop:
        _writer = loop.create_task(_write_tokens())
    return _writer


async def _write_tokens() -> None:
    await asyncio.sleep(0)  # the calls ending in this turn of the loop join the write
    while _unwritten:  # and those that end while it is written, the next one
        adds = [(key, amount, expires) for key, (amount, expires) in _unwritten.items()]
        _unwritten.clear()
        try:
            await get_counters().add_all(adds)
        except Exception as exc:  # counted late or not at all: never fails a call
            logger.warning("policy token counts not written: %s", type(exc).__name__)


async def _release(leases: list[tuple[str, str]]) -> None:
    try:
        for key, lease_id in leases:
            await get_counters().release(key, lease_id)
    except Exception as exc:  # the lease expires on its own
        logger.warning("stream leases not released: %s", type(exc).__name__)


_unwritten: dict[str, tuple[int, float]] = {}
_writer: asyncio.Task[None] | None = None
_last_settle: dict[str, asyncio.Task[None]] = {}
_live: set[tuple[str, str]] = set()
_renewer: asyncio.Task[None] | None = None


def _keep_renewing() -> None:
    global _renewer
    loop = asyncio.get_running_loop()
    if _renewer is None or _renewer.done() or _renewer.get_loop() is not loop:
        _renewer = loop.create_task(_renew())


async def _renew() -> None:
    """Renew this process's leases while it holds any: a process that dies stops renewing,
    and its streams stop counting once their leases expire."""
    while _live:
        await asyncio.sleep(LEASE_SECONDS / 3)
        try:
            await get_counters().renew(list(_live))
        except Exception as exc:
            logger.warning("stream leases not renewed: %s", type(exc).__name__)


def _tokens_key(scope: Scope, name: str, window: int) -> str:
    return f"{scope.key}:{'tpm' if name == 'tokens_per_minute' else 'tpd'}:{window}"


def _reached(name: str, scope: Scope, limit: int, retry_after: float) -> LLMLimitError:
    return LLMLimitError(
        f"{name} of {scope.label} ({limit}) reached; try again in {max(1, round(retry_after))} s",
        limit=name,
        retry_after=max(1.0, retry_after),
    )
