"""One usage record per caller-level LLM call, whoever made it and however it ended.

A call opens a `CallRecord` (`recording`); the calls it makes inside (a structured call's
attempts, a fallback chain's providers) join it rather than open their own, so N calls by a
caller are N records, with the tokens of every attempt summed and the provider and model
that served the call (after fallback). The record is handed to the usage buffer when the
call ends: ok, failed (the error's kind) or cancelled (the caller went away). Nothing here
touches the database; `app.services.usage_ledger` writes records in batches, off the call.

A record's kind is the call's shape: `text`, `structured` (our validated structured output,
its attempts summed), `stream`; a call whose caller asked the upstream for JSON with OpenAI's
`response_format` (`json_object` or `json_schema`, on the facade: `set_json_reply`) is
`json`, or `json_stream` when streamed; a call that offered tools is `tools` or
`tools_stream` (whatever its `response_format`).

Refusals: a call refused by the provider's service before any upstream was asked (missing
credentials, a full queue) is a record like any failed call: its outcome names the refusal
(`llm_configuration_error`, `llm_overloaded`), with no tokens. A model the upstream does not
know is refused by the upstream itself: `llm_model_not_found`, no tokens. A request refused
while its provider and model are still being chosen (an unknown provider, one without a key
or a model, unreadable settings) made no call and leaves no record.

Who called is a context variable set where the caller is authenticated (`set_caller`):
library calls made outside a request have no caller.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import cache

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
_json_reply: ContextVar[bool] = ContextVar("llm_json_reply", default=False)
JSON_KINDS = {"text": "json", "stream": "json_stream"}


def set_caller(
    user_id: uuid.UUID, api_key_id: uuid.UUID | None, scopes: tuple[policy.Scope, ...] = ()
) -> None:
    """Name the caller of the LLM calls made from here on in this context (one request)."""
    _caller.set(Caller(user_id, api_key_id, scopes))


def current_caller() -> Caller | None:
    """The caller of this context's LLM calls (None outside an authenticated request)."""
    return _caller.get()


def set_json_reply() -> None:
    """The LLM calls made from here on in this context (one request) ask the upstream for
    JSON (`response_format`): their records' kind says so (`JSON_KINDS`)."""
    _json_reply.set(True)


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
    json_reply: bool = field(default_factory=_json_reply.get)
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
        kind = self.kind or "text"
        self.kind = JSON_KINDS.get(kind, kind) if self.json_reply else kind
        self.latency_ms = (time.perf_counter() - self.started) * 1000
        if self.admitted:
            policy.settle(self)
        _sink()(self.entry())

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


@cache
def _sink() -> Callable[[LedgerEntry], None]:
    # Imported on the first record, not with this module: the writer imports models and
    # the db. Cached: an import statement per call costs more than the rest of `finish`.
    from app.services.usage_ledger import submit

    return submit


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
