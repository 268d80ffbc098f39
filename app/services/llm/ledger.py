"""One usage record per caller-level LLM call, whoever made it and however it ended.

A call opens a `CallRecord` (`recording`); the calls it makes inside (a structured call's
attempts, a fallback chain's providers) join it rather than open their own, so N calls by a
caller are N records, with the tokens of every attempt summed and the provider and model
that served the call (after fallback). The record is handed to the usage buffer when the
call ends: ok, failed (the error's kind) or cancelled (the caller went away). Nothing here
touches the database; `app.services.usage_ledger` writes records in batches, off the call.

Who called is a context variable set where the caller is authenticated (`set_caller`):
library calls made outside a request have no caller.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from app.services.llm import policy
from app.services.llm.errors import LLMError
from app.services.llm.protocol import Usage


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the user, the API key used (None for a JWT), and the policies their
    calls are held to (the key's, then the user's; none: no limits)."""

    user_id: uuid.UUID
    api_key_id: uuid.UUID | None = None
    scopes: tuple[policy.Scope, ...] = ()


LedgerEntry = tuple[
    float, int | None, int | None, str, str, str, str, int, int, float, float | None
]
"""A finished record as buffered: (time.time(), user id as int, API key id as int, kind,
provider, model, outcome, prompt tokens, completion tokens, latency ms, cost). A plain tuple
of atoms, which the cyclic GC stops tracking: a buffer of objects surviving for a second
under load would otherwise be promoted and rescanned by full collections."""

_caller: ContextVar[Caller | None] = ContextVar("llm_caller", default=None)
_open: ContextVar[CallRecord | None] = ContextVar("llm_call_record", default=None)


def set_caller(
    user_id: uuid.UUID, api_key_id: uuid.UUID | None, scopes: tuple[policy.Scope, ...] = ()
) -> None:
    """Name the caller of the LLM calls made from here on in this context (one request)."""
    _caller.set(Caller(user_id, api_key_id, scopes))


def current_caller() -> Caller | None:
    """The caller of this context's LLM calls (None outside an authenticated request)."""
    return _caller.get()


@dataclass(slots=True)
class CallRecord:
    """What one caller-level call cost, filled in as it goes."""

    kind: str | None
    caller: Caller | None = field(default_factory=_caller.get)
    at: float = field(default_factory=time.time)
    started: float = field(default_factory=time.perf_counter)
    provider: str = ""
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None
    outcome: str = "cancelled"
    latency_ms: float = 0.0
    admitted: bool = False  # by the caller's policies (`policy.admit`)
    leases: list[tuple[str, str]] = field(default_factory=list)  # its streams' leases

    def trying(self, provider: str, model: str) -> None:
        """An attempt goes to `provider`'s `model` (what a failed call names)."""
        self.provider, self.model = provider, model

    def served(self, provider: str, model: str, usage: Usage | None) -> None:
        """An attempt answered: who served it and the tokens it spent."""
        self.provider, self.model = provider or self.provider, model or self.model
        if usage is not None:
            self.prompt_tokens += usage.prompt_tokens
            self.completion_tokens += usage.completion_tokens
            if usage.cost is not None:
                self.cost = (self.cost or 0.0) + usage.cost

    def finish(self, error: BaseException | None) -> None:
        """Close the record with the call's outcome and hand it to the usage buffer."""
        if error is None:
            self.outcome = "ok"
        elif isinstance(error, LLMError):
            self.outcome = error.kind
        elif isinstance(error, asyncio.CancelledError | GeneratorExit):
            self.outcome = "cancelled"
        else:
            self.outcome = "internal_error"
        self.kind = self.kind or "text"
        self.latency_ms = (time.perf_counter() - self.started) * 1000
        if self.admitted:
            policy.settle(self)
        from app.services.usage_ledger import submit  # the writer imports models and the db

        submit(self.entry())

    def entry(self) -> LedgerEntry:
        """The record as the buffer keeps it."""
        caller = self.caller
        return (
            self.at,
            caller.user_id.int if caller else None,
            caller.api_key_id.int if caller and caller.api_key_id else None,
            self.kind or "text",
            self.provider,
            self.model,
            self.outcome,
            self.prompt_tokens,
            self.completion_tokens,
            self.latency_ms,
            self.cost,
        )


def current_record() -> CallRecord | None:
    """The record the current call adds to, if one is open."""
    return _open.get()


@contextmanager
def recording(kind: str | None) -> Iterator[CallRecord]:
    """The open record (joined, taking `kind` if it has none) or a new one closed on exit.

    For coroutine calls only: a stream's record is passed along explicitly (a context
    variable set inside an async generator would leak into whoever iterates it).
    """
    outer = _open.get()
    if outer is not None:
        outer.kind = outer.kind or kind
        yield outer
        return
    record = CallRecord(kind)
    token = _open.set(record)
    try:
        yield record
    except BaseException as exc:
        record.finish(exc)
        raise
    else:
        record.finish(None)
    finally:
        _open.reset(token)
