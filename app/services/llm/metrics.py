"""Prometheus metrics of LLM calls: counts and errors, latency, time to first token, tokens."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

from app.services.llm.protocol import Usage

disable_created_metrics()  # type: ignore[no-untyped-call]  # `*_created` series double the output and nobody graphs them

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
MAX_MODEL_LABELS = 100

REQUESTS = Counter(
    "llm_requests_total",
    "LLM calls by provider, model, kind (complete|stream|embed) and outcome (ok or error type)",
    ["provider", "model", "kind", "outcome"],
)
LATENCY = Histogram(
    "llm_request_duration_seconds",
    "Time from sending an LLM call to its last byte",
    ["provider", "model", "kind"],
    buckets=_LATENCY_BUCKETS,
)
TIME_TO_FIRST_TOKEN = Histogram(
    "llm_time_to_first_token_seconds",
    "Time from sending a streamed LLM call to its first text",
    ["provider", "model"],
    buckets=_LATENCY_BUCKETS,
)
TOKENS = Counter(
    "llm_tokens_total",
    "Tokens reported by upstreams, by direction (prompt|completion)",
    ["provider", "model", "direction"],
)
TOOL_CALLS = Counter(
    "llm_tool_calls_total",
    "Tool calls models asked for (never labelled by the function's name: callers choose it)",
    ["provider", "model"],
)
STREAMS_IN_FLIGHT = Gauge("llm_streams_in_flight", "Streams being relayed now", ["provider"])

# Model names allowed as a label value: configured ones (settings, env) and those an
# upstream's discovery listed; never merely named by a caller (a caller may name anything,
# and every label value is a time series kept for the life of the process).
_label_models: set[str] = set()


def allow_model_labels(models: Iterable[str]) -> None:
    """Let these configured or discovered models be label values (up to MAX_MODEL_LABELS)."""
    for model in models:
        if len(_label_models) >= MAX_MODEL_LABELS:
            return
        _label_models.add(model)


def model_label(model: str) -> str:
    """The model as a label value if it is configured or was discovered, else "other"."""
    return model if model in _label_models else "other"


def record_call(
    provider: str, model: str, kind: str, outcome: str, seconds: float, usage: Usage | None
) -> None:
    """Count one finished call, its latency and its tokens."""
    label = model_label(model)
    REQUESTS.labels(provider, label, kind, outcome).inc()
    if outcome == "llm_overloaded":
        return  # refused before reaching the upstream: its wait is not an upstream latency
    LATENCY.labels(provider, label, kind).observe(seconds)
    if usage is not None:
        if usage.prompt_tokens:
            TOKENS.labels(provider, label, "prompt").inc(usage.prompt_tokens)
        if usage.completion_tokens:
            TOKENS.labels(provider, label, "completion").inc(usage.completion_tokens)


def record_tool_calls(provider: str, model: str, count: int) -> None:
    """Count the tool calls one reply asked for."""
    if count:
        TOOL_CALLS.labels(provider, model_label(model)).inc(count)
