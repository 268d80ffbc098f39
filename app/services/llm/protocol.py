"""The interface every provider implements, and the small types it speaks in."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel

from app.core.config import LLMProvider

if TYPE_CHECKING:
    from app.services.llm.tools import ToolUse

ModelT = TypeVar("ModelT", bound=BaseModel)
Message = dict[str, Any]  # an OpenAI-style chat message: {"role": ..., "content": ...}


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens spent by one call, as the upstream reported them (0 when it did not)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None
    """What the call cost, when the upstream says (OpenRouter: `usage.cost`, in credits)."""

    @property
    def total_tokens(self) -> int:
        """Prompt and completion tokens together."""
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function the model asks the caller to run: OpenAI's `tool_calls[i]`, whatever the
    provider's wire said. `arguments` is a JSON object's text, as OpenAI sends it."""

    id: str
    name: str
    arguments: str

    def as_openai(self) -> dict[str, Any]:
        """The call in OpenAI's message shape (`{"id", "type": "function", "function"}`)."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a streamed tool call, as OpenAI streams it: the call's `index` in the
    reply, its `id` and `name` on the first piece, then fragments of `arguments`."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class Completion:
    """One finished reply: its text, any reasoning, the tools it asks to call, why it
    stopped, what it cost, and which provider and model answered (empty only inside a
    provider's wire, which the service fills in)."""

    text: str
    finish_reason: str | None = None
    reasoning: str | None = None
    usage: Usage = field(default_factory=Usage)
    provider: str = ""
    model: str = ""
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """A piece of a streamed reply; the last one carries `finish_reason`, `usage`, and the
    provider and model that answered."""

    text: str = ""
    reasoning: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    provider: str = ""
    model: str = ""
    tool_calls: tuple[ToolCallDelta, ...] = ()

    @property
    def has_content(self) -> bool:
        """Whether the chunk carries anything of the reply (text, reasoning, a tool call)."""
        return bool(self.text or self.reasoning or self.tool_calls)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a provider's wire can do, so that provider-neutral code can choose without
    knowing which provider it talks to."""

    json_schema: bool = True
    """Output constrained to a JSON Schema (OpenAI's `response_format: json_schema`,
    Ollama's `format`, Bedrock's `outputConfig`)."""
    json_object: bool = True
    """A "JSON only" mode without a schema."""
    tool_forced_output: bool = False
    """Structured output through a forced tool call whose input schema is the schema."""
    context_length: bool = False
    """Discovery reports each model's context length."""
    loaded_state: bool = False
    """Discovery reports whether each model is loaded."""
    tools: bool = True
    """Tool calling (OpenAI's `tools`, Ollama's native `tools`, Bedrock's `toolConfig`)."""
    forced_tool_choice: bool = True
    """`tool_choice` "required" or a named function can be honoured (Ollama has none)."""
    tool_use_listed: bool = False
    """Discovery says whether each model was trained for tool use (LM Studio)."""
    embeddings: bool = False
    """Serves embeddings (`ProviderWire.embed`)."""


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One chat request as every wire receives it (OpenAI's vocabulary; a wire translates).

    `response_format` is OpenAI's shape: `{"type": "json_object"}` or
    `{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}, "strict": true}}`.
    """

    model: str
    messages: Sequence[Message]
    temperature: float | None = None
    max_tokens: int | None = None
    response_format: dict[str, Any] | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    tools: Sequence[dict[str, Any]] | None = None
    """OpenAI's `tools`: `[{"type": "function", "function": {"name", "description",
    "parameters"}}]`, checked by the caller's side (`tools.py`)."""
    tool_choice: str | dict[str, Any] | None = None
    """OpenAI's `tool_choice`: "auto", "none", "required" or `{"type": "function",
    "function": {"name": ...}}`."""
    attempt: int = 0
    """How many times this request was sent before. A wire resends at once over a pooled
    connection the server had closed only on the first attempt, so that a server hanging
    up on every request costs one extra request per call, not one per retry."""


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    """Texts to embed in one upstream call (no more than the wire's `embedding_batch`)."""

    model: str
    texts: Sequence[str]
    dimensions: int | None = None
    """The vectors' length, for models that can shorten theirs (OpenAI's v3, Titan v2)."""
    attempt: int = 0
    """As `ChatRequest.attempt`."""


@dataclass(frozen=True, slots=True)
class Embeddings:
    """Vectors for texts, in the texts' order, with what they cost and who made them."""

    vectors: list[list[float]]
    usage: Usage = field(default_factory=Usage)
    provider: str = ""
    model: str = ""

    @property
    def dimensions(self) -> int:
        """The length of each vector (0 when there are none)."""
        return len(self.vectors[0]) if self.vectors else 0


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model an upstream offers. Fields other than `id` are None when the upstream is silent."""

    id: str
    type: str | None = None
    state: str | None = None  # "loaded" | "not-loaded" (LM Studio's native API)
    max_context_length: int | None = None
    publisher: str | None = None
    quantization: str | None = None
    structured_output: bool | None = None  # OpenRouter: `structured_outputs` is supported
    tool_use: bool | None = None  # LM Studio: the model was trained for tool use


class ProviderWire(Protocol):
    """What a provider module implements: its wire protocol and nothing else.

    One call is one attempt. Every failure is raised as an `LLMError` whose `retryable` says
    whether sending the request again is safe (nothing reached the upstream's model, or it
    refused before generating); retries, deadlines, the concurrency slot, metrics and logs
    belong to the provider-neutral service that drives the wire (`calls.py`).
    """

    @property
    def capabilities(self) -> Capabilities:
        """What this wire can do."""
        ...

    async def complete(self, request: ChatRequest) -> Completion:
        """One completion, or an LLMError."""
        ...

    def stream(self, request: ChatRequest) -> AsyncGenerator[StreamChunk, None]:
        """The completion as it arrives. Chunks without text are allowed (keep-alives);
        the last one carries `finish_reason` and, when the upstream reports it, `usage`.
        A stream that ends without a finish reason is treated as broken off.

        A wire should yield an empty chunk as soon as the upstream accepted the request
        (its status said 200), before waiting for the first event: the SSE relay then
        sends its response headers while the model thinks, and what fails after that
        reaches the caller as an in-stream error event rather than an HTTP status."""
        ...

    async def list_models(self) -> list[ModelInfo]:
        """The models the upstream offers (one attempt: discovery should fail fast)."""
        ...

    def embedding_batch(self, model: str) -> int:
        """How many texts one `embed` call of `model` may carry."""
        ...

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        """Vectors for `request.texts`, in order (one upstream call, or an LLMError;
        LLMInvalidRequestError for what this upstream or model cannot do, e.g. dimensions)."""
        ...


@runtime_checkable
class LLMService(Protocol):
    """What callers use: one provider and model, ready to answer."""

    @property
    def provider(self) -> LLMProvider:
        """Which provider answers."""
        ...

    @property
    def model(self) -> str:
        """Which model answers."""
        ...

    @property
    def display_name(self) -> str:
        """The provider's name for people ("LM Studio")."""
        ...

    @property
    def capabilities(self) -> Capabilities:
        """What the provider can do (structured-output modes, discovery details)."""
        ...

    @property
    def max_retries(self) -> int:
        """How many times a failed call may be sent again."""
        ...

    @property
    def upstream(self) -> str:
        """Where the provider is (its address without credentials)."""
        ...

    async def get_response(
        self,
        prompt: str,
        *,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> str:
        """The model's reply to `prompt`, as text."""
        ...

    async def get_structured_response(
        self,
        prompt: str,
        response_model: type[ModelT],
        *,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> ModelT:
        """The model's reply to `prompt`, validated as an instance of `response_model`."""
        ...

    async def get_tool_calls(
        self,
        prompt: str,
        tools: Sequence[type[BaseModel]],
        *,
        system: str | None = None,
        tool_choice: str = "auto",
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> list[ToolUse]:
        """The tools the model asks to call for `prompt`, each call's arguments validated
        as the tool's model (empty when it answered with text)."""
        ...

    def stream_response(
        self,
        prompt: str,
        *,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> AsyncIterator[str]:
        """The model's reply to `prompt`, as text chunks while they arrive."""
        ...

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        response_format: dict[str, Any] | None = None,
        seed: int | None = None,
        stop: str | list[str] | None = None,
        tools: Sequence[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
    ) -> Completion:
        """One chat completion over `messages`, with everything the upstream reported.
        With `tools` (OpenAI's shape) the reply may carry `tool_calls` instead of text."""
        ...

    def stream_chunks(
        self,
        messages: Sequence[Message],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        response_format: dict[str, Any] | None = None,
        seed: int | None = None,
        stop: str | list[str] | None = None,
        tools: Sequence[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
    ) -> AsyncIterator[StreamChunk]:
        """A completion as it arrives; the last chunk carries finish reason and usage.
        An empty chunk before the first text says that the upstream accepted the request."""
        ...

    async def list_models(self) -> list[ModelInfo]:
        """The models the upstream offers."""
        ...

    async def context_length(self) -> int | None:
        """The model's context window, when the provider reports it."""
        ...

    async def embed(
        self,
        texts: str | Sequence[str],
        *,
        model: str | None = None,
        dimensions: int | None = None,
    ) -> Embeddings:
        """Vectors for `texts`, in their order, from the provider's embedding model (or
        `model`), with usage and who made them."""
        ...
