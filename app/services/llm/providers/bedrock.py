"""AWS Bedrock: the Converse API (`converse`, `converse_stream`) through aiobotocore, and
discovery on the control plane (foundation models and system-defined inference profiles).
Embeddings through InvokeModel, in the body each family takes: Amazon Titan (one text per
call: `inputText`, `dimensions` for v2) and Cohere Embed (up to 96 `texts` per call).

aiobotocore and botocore are imported inside functions: importing this module stays cheap.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import json
import os
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from app.core.config import LLMProvider, Settings, get_settings
from app.services.llm.config import BedrockConfig, ProviderConfig
from app.services.llm.errors import (
    LLMAuthenticationError,
    LLMConfigurationError,
    LLMError,
    LLMInvalidRequestError,
    LLMModelNotFoundError,
    LLMTimeoutError,
    LLMUpstreamError,
)
from app.services.llm.per_loop import PerLoop
from app.services.llm.protocol import (
    Capabilities,
    ChatRequest,
    Completion,
    EmbeddingRequest,
    Embeddings,
    Message,
    ModelInfo,
    StreamChunk,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from app.services.llm.providers.base import ProviderSpec, Wire
from app.services.llm.providers.clients import close_with_loop, connect_timeout
from app.services.llm.providers.wire import short_reason, stale_connection, vector_of
from app.services.llm.tools import (
    MAX_TOOL_CALLS,
    calls_in,
    checked_call,
    chosen_name,
    parsed_arguments,
)

# Converse's native structured output (`outputConfig.textFormat`, a JSON Schema the reply is
# decoded against) is documented for Claude Haiku 4.5, Sonnet 4.5, Opus 4.5 and Opus 4.6;
# later Claude releases are assumed to keep it. Every other model (Claude 3.x/4.0/4.1, Nova,
# Mistral Large, Llama, …) gets a forced tool whose input schema is the schema. The rule
# matches foundation-model ids, inference profiles ("us.", "global.") and ARNs alike.
NATIVE_SCHEMA_MODELS = re.compile(r"anthropic\.claude-(?:haiku|sonnet|opus)-(?:4-[5-9]|[5-9])\b")
MAX_PROFILE_PAGES = 10
FORCED_TOOL = "json_output"
# Where the standard AWS credential chain can find credentials without any network call.
CHAIN_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)
CREDENTIAL_CHAIN = (
    "set AWS_BEARER_TOKEN_BEDROCK to a Bedrock API key, or give the standard AWS credential "
    "chain something to find: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (with "
    "AWS_SESSION_TOKEN for temporary ones), AWS_PROFILE with ~/.aws/credentials or "
    "~/.aws/config (SSO, assume-role), AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN, or a "
    "container or EC2 instance role"
)
AUTH_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "IncompleteSignatureException",
        "MissingAuthenticationTokenException",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
    }
)
PERMISSIONS = {
    "converse": "bedrock:InvokeModel",
    "converse_stream": "bedrock:InvokeModelWithResponseStream",
    "invoke_model": "bedrock:InvokeModel",
    "list_foundation_models": "bedrock:ListFoundationModels",
    "list_inference_profiles": "bedrock:ListInferenceProfiles",
}
_EMPTY_OBJECT: dict[str, Any] = {"type": "object", "properties": {}}
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}


# Embedding families, matched in model ids, inference profiles ("us.cohere…") and ARNs alike.
TITAN_EMBED = re.compile(r"amazon\.titan-embed-")
TITAN_DIMENSIONS = re.compile(r"amazon\.titan-embed-text-v2")  # v1 has one size only
COHERE_EMBED = re.compile(r"cohere\.embed-")
COHERE_BATCH = 96  # Cohere Embed's limit on texts per call
INPUT_COUNT_HEADER = "x-amzn-bedrock-input-token-count"


def native_schema_supported(model_id: str) -> bool:
    """Whether `model_id` gets Converse's `outputConfig` rather than a forced tool."""
    return NATIVE_SCHEMA_MODELS.search(model_id) is not None


@dataclass
class _Clients:
    runtime: Any  # aiobotocore's bedrock-runtime client
    control: Any  # and its bedrock (control plane) client


@dataclass
class _Pool:
    clients: dict[tuple[str, ...], _Clients] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


_pools: PerLoop[_Pool] = PerLoop(_Pool)
_shared: dict[str, Any] = {}


class _StaticToken:
    """A token provider for botocore's session: the configured Bedrock API key (botocore
    itself only reads it from the process environment)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def load_token(self, **_kwargs: object) -> object:
        from botocore.tokens import FrozenAuthToken  # type: ignore[import-untyped]

        return FrozenAuthToken(self.token)


class BedrockWire(Wire):
    """One Converse call per attempt; errors as the standard LLMErrors."""

    capabilities: Capabilities = Capabilities(
        json_schema=True, json_object=True, tool_forced_output=True, embeddings=True
    )
    config: BedrockConfig

    def __init__(self, spec: ProviderSpec, config: ProviderConfig) -> None:
        assert isinstance(config, BedrockConfig)
        super().__init__(spec, config)
        self.config = config
        token = config.bearer_token.get_secret_value() if config.bearer_token else ""
        self._token = token or None

    # ── the API ──────────────────────────────────────────────────────────────────

    async def complete(self, request: ChatRequest) -> Completion:
        """One Converse call; a forced tool's input comes back as the JSON text."""
        arguments, forced = self._arguments(request)
        clients = await self._clients()
        reply = await self._call(
            clients.runtime.converse, "converse", arguments, resend=not request.attempt
        )
        try:
            blocks = reply["output"]["message"]["content"]
            tool_inputs = [b["toolUse"]["input"] for b in blocks if "toolUse" in b]
            text = "".join(b["text"] for b in blocks if "text" in b)
            reasoning = "".join(
                b["reasoningContent"].get("reasoningText", {}).get("text", "")
                for b in blocks
                if "reasoningContent" in b
            )
            if forced and tool_inputs:
                text = json.dumps(tool_inputs[0], ensure_ascii=False)
            calls = () if forced else _tool_calls(blocks)
            return Completion(
                text=text,
                finish_reason=_finish_reason(reply.get("stopReason"), forced),
                reasoning=reasoning or None,
                usage=_usage(reply.get("usage")) or Usage(),
                tool_calls=calls,
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise self.invalid_reply_error("a Converse reply of an unexpected shape") from exc
        except ValueError as exc:
            raise self.invalid_reply_error(f"a malformed tool call ({exc})") from None

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamChunk, None]:
        """ConverseStream's events as chunks (a forced tool's input deltas as text)."""
        arguments, forced = self._arguments(request)
        clients = await self._clients()
        reply = await self._call(
            clients.runtime.converse_stream,
            "converse_stream",
            arguments,
            resend=not request.attempt,
        )
        events = reply["stream"]
        stop_reason: str | None = None
        usage: Usage | None = None
        calls = _StreamedCalls()
        try:
            yield StreamChunk()  # Bedrock accepted (200): the relay may start its reply
            iterator = aiter(events)
            while True:
                try:
                    event = await anext(iterator)
                except StopAsyncIteration:
                    break
                except Exception as exc:
                    error = self._failure(exc, "converse_stream", request.model)
                    if stop_reason is not None and error.retryable:
                        break  # the reply was complete; only its usage was lost
                    raise error from exc
                if "messageStop" in event:
                    stop_reason = event["messageStop"].get("stopReason") or "end_turn"
                elif "metadata" in event:
                    usage = _usage(event["metadata"].get("usage"))
                elif "contentBlockStart" in event and not forced:
                    if (started := calls.start(event["contentBlockStart"])) is not None:
                        yield StreamChunk(tool_calls=(started,))
                elif "contentBlockStop" in event and not forced:
                    if (closed := calls.stop(event["contentBlockStop"])) is not None:
                        yield StreamChunk(tool_calls=(closed,))
                elif "contentBlockDelta" in event:
                    block = event["contentBlockDelta"]
                    delta = block.get("delta", {})
                    text = delta.get("text") or ""
                    fragment = delta.get("toolUse", {}).get("input") or ""
                    reasoning = delta.get("reasoningContent", {}).get("text") or ""
                    if forced:
                        text = text or fragment  # the forced tool's input is the answer
                    elif fragment and (piece := calls.fragment(block, fragment)) is not None:
                        yield StreamChunk(tool_calls=(piece,))
                    if text or reasoning:
                        yield StreamChunk(text=text, reasoning=reasoning)
        except ValueError as exc:  # only our reading of tool blocks raises it
            raise self.invalid_reply_error(f"a malformed tool call ({exc})") from None
        finally:
            events.close()  # at once when the caller stops early; a no-op after the end
        if stop_reason is None:
            raise self.broken_reply_error()
        yield StreamChunk(finish_reason=_finish_reason(stop_reason, forced), usage=usage)

    async def list_models(self) -> list[ModelInfo]:
        """Foundation models with text output and streaming (those invocable on demand),
        then the active system-defined inference profiles over such models."""
        control = (await self._clients()).control
        listed = await self._call(
            control.list_foundation_models, "list_foundation_models", {"byOutputModality": "TEXT"}
        )
        usable = {
            summary["modelId"]: summary
            for summary in listed.get("modelSummaries", [])
            if "TEXT" in summary.get("outputModalities", [])
            and summary.get("responseStreamingSupported") is True
        }
        models = [
            _model_info(model_id, summary)
            for model_id, summary in usable.items()
            if "ON_DEMAND" in summary.get("inferenceTypesSupported", ["ON_DEMAND"])
        ]
        arguments: dict[str, Any] = {"typeEquals": "SYSTEM_DEFINED", "maxResults": 1000}
        for _ in range(MAX_PROFILE_PAGES):
            page = await self._call(
                control.list_inference_profiles, "list_inference_profiles", arguments
            )
            for profile in page.get("inferenceProfileSummaries", []):
                ids = [
                    m.get("modelArn", "").partition("foundation-model/")[2]
                    for m in profile.get("models", [])
                ]
                if profile.get("status") == "ACTIVE" and ids and all(i in usable for i in ids):
                    models.append(_model_info(profile["inferenceProfileId"], usable[ids[0]]))
            if not page.get("nextToken"):
                break
            arguments["nextToken"] = page["nextToken"]
        return models

    # ── embeddings ───────────────────────────────────────────────────────────────

    def embedding_batch(self, model: str) -> int:
        """Cohere Embed takes 96 texts per call; Titan one."""
        return COHERE_BATCH if COHERE_EMBED.search(model) else 1

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        """One InvokeModel call in the model family's own body; the tokens from the
        `X-Amzn-Bedrock-Input-Token-Count` header (Titan also says `inputTextTokenCount`)."""
        model = request.model
        if COHERE_EMBED.search(model):
            if request.dimensions is not None:
                raise self._no_dimensions(model)
            body: dict[str, Any] = {"texts": list(request.texts), "input_type": "search_document"}
        elif TITAN_EMBED.search(model):
            body = {"inputText": request.texts[0]}
            if request.dimensions is not None:
                if not TITAN_DIMENSIONS.search(model):
                    raise self._no_dimensions(model)
                body["dimensions"] = request.dimensions
        else:
            raise LLMInvalidRequestError(
                f"{self.spec.display_name} model '{model}' is not an embedding model this "
                "gateway can call: use an Amazon Titan (amazon.titan-embed-text-v2:0) or "
                "Cohere Embed (cohere.embed-english-v3) model",
                provider=self.spec.provider,
            )
        clients = await self._clients()
        arguments = {
            "modelId": model,
            "body": self.encode(body),
            "contentType": "application/json",
            "accept": "application/json",
        }
        reply = await self._call(
            clients.runtime.invoke_model, "invoke_model", arguments, resend=not request.attempt
        )
        try:
            answer = json.loads(await reply["body"].read())
        except Exception as exc:
            raise self._failure(exc, "invoke_model", model) from exc
        found = answer.get("embeddings") if isinstance(answer, dict) else None
        if isinstance(found, dict):  # Cohere asked for `embedding_types` answers by type
            found = found.get("float")
        if isinstance(answer, dict) and "embedding" in answer:
            found = [answer["embedding"]]
        vectors = [vector_of(item) for item in found] if isinstance(found, list) else []
        if len(vectors) != len(request.texts) or any(v is None for v in vectors):
            raise self.invalid_reply_error(
                f"{len(vectors)} embeddings for {len(request.texts)} inputs, or one that is "
                "not a list of numbers"
            )
        headers = reply.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        counted = headers.get(INPUT_COUNT_HEADER) or answer.get("inputTextTokenCount")
        tokens = int(counted) if str(counted).isdigit() else 0
        return Embeddings([v for v in vectors if v is not None], Usage(prompt_tokens=tokens))

    def _no_dimensions(self, model: str) -> LLMInvalidRequestError:
        return LLMInvalidRequestError(
            f"{self.spec.display_name} model '{model}' does not take `dimensions` (Amazon "
            "Titan Text Embeddings v2 does: 256, 512 or 1024); send the request without it",
            provider=self.spec.provider,
        )

    # ── the request ──────────────────────────────────────────────────────────────

    def _arguments(self, request: ChatRequest) -> tuple[dict[str, Any], bool]:
        """Converse's arguments, and whether the answer is forced through our tool.
        (Converse has no seed: `request.seed` is not sent.)"""
        system, messages = converse_messages(request.messages)
        arguments: dict[str, Any] = {"modelId": request.model or self.model, "messages": messages}
        if system:
            arguments["system"] = system
        inference: dict[str, Any] = {}
        if request.max_tokens is not None:
            inference["maxTokens"] = request.max_tokens
        if request.temperature is not None:
            inference["temperature"] = request.temperature
        stop = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
        if stop:
            inference["stopSequences"] = stop
        if inference:
            arguments["inferenceConfig"] = inference
        forced = _structured(request.response_format, arguments)
        if request.tools:
            if forced:
                raise LLMInvalidRequestError(
                    f"{self.spec.display_name} answers JSON through a forced tool for model "
                    f"{arguments['modelId']}: send either `tools` or a JSON `response_format`",
                    provider=self.spec.provider,
                )
            self._tool_config(request, messages, arguments)
        return arguments, forced

    def _tool_config(
        self, request: ChatRequest, messages: list[dict[str, Any]], arguments: dict[str, Any]
    ) -> None:
        """Converse's `toolConfig` for OpenAI's tools and tool_choice ("required" is `any`,
        a named function `tool`). Converse has no "none": the tools are left out, which it
        allows only in a conversation without tool blocks."""
        assert request.tools is not None
        if request.tool_choice == "none":
            if any("toolUse" in b or "toolResult" in b for m in messages for b in m["content"]):
                raise LLMInvalidRequestError(
                    f"{self.spec.display_name} has no tool_choice `none` (model "
                    f"{arguments['modelId']}), and a conversation holding tool calls must "
                    "offer the tools: send `auto`",
                    provider=self.spec.provider,
                )
            return
        specs = []
        for tool in request.tools:
            function = tool["function"]
            spec: dict[str, Any] = {
                "name": function["name"],
                "inputSchema": {"json": function.get("parameters") or _EMPTY_OBJECT},
            }
            if function.get("description"):
                spec["description"] = function["description"]
            specs.append({"toolSpec": spec})
        config: dict[str, Any] = {"tools": specs}
        if request.tool_choice == "required":
            config["toolChoice"] = {"any": {}}
        elif (name := chosen_name(request.tool_choice)) is not None:
            config["toolChoice"] = {"tool": {"name": name}}
        elif request.tool_choice == "auto":
            config["toolChoice"] = {"auto": {}}
        arguments["toolConfig"] = config

    # ── clients ──────────────────────────────────────────────────────────────────

    async def _clients(self) -> _Clients:
        connections = get_settings().llm_max_concurrency + 8
        token_hash = hashlib.sha256(self._token.encode()).hexdigest() if self._token else ""
        endpoint = self.config.endpoint_url or ""
        key = (self.config.region, endpoint, str(self.config.timeout), token_hash, str(connections))
        pool = _pools.get()
        found = pool.clients.get(key)
        if found is not None:
            return found
        async with pool.lock:
            found = pool.clients.get(key)
            if found is None:
                try:
                    found = await self._open(connections)
                except Exception as exc:
                    raise self._failure(exc, "create_client", None) from exc
                pool.clients[key] = found
                close_with_loop(("bedrock", *key), _closer(pool, key, found))
        return found

    async def _open(self, connections: int) -> _Clients:
        # The SDK's first import takes most of a second: not on the event loop.
        await asyncio.to_thread(importlib.import_module, "aiobotocore.session")
        from aiobotocore.config import AioConfig  # type: ignore[import-untyped]
        from aiobotocore.credentials import AioCredentialResolver  # type: ignore[import-untyped]
        from aiobotocore.session import AioSession  # type: ignore[import-untyped]

        session = AioSession()
        # botocore's data loader only caches the SDK's JSON files (service models, endpoints):
        # one for every session spares each new client pool reading them again.
        loader = _shared.setdefault("data_loader", session.get_component("data_loader"))
        session.register_component("data_loader", loader)
        options: dict[str, Any] = {}
        if self._token is not None:
            # The API key alone signs the requests: no credential chain walk (which would
            # probe the EC2 metadata service on a machine without credentials).
            session.register_component("token_provider", _StaticToken(self._token))
            session.register_component("credential_provider", AioCredentialResolver([]))
            options["signature_version"] = "bearer"
        config = AioConfig(
            # botocore's max_attempts counts retries; total_max_attempts counts the first
            # attempt too: one attempt, as we retry ourselves.
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=connect_timeout(self.config.timeout),
            read_timeout=self.config.timeout,
            max_pool_connections=connections,
            warm_up_loader_caches=True,  # reads the service models off the event loop
            **options,
        )
        made = []
        for service in ("bedrock-runtime", "bedrock"):
            creator = session.create_client(
                service,
                region_name=self.config.region,
                endpoint_url=self.config.endpoint_url,
                config=config,
            )
            made.append(await creator.__aenter__())
        return _Clients(runtime=made[0], control=made[1])

    async def _call(
        self,
        method: Callable[..., Awaitable[Any]],
        operation: str,
        arguments: dict[str, Any],
        *,
        resend: bool = True,
    ) -> Any:
        """`method(**arguments)`, failures as LLMErrors. `resend`: whether a call that went
        to a stale pooled connection is sent once more (a chat call's first attempt only:
        see `ChatRequest.attempt`)."""
        for resent in (False, True):
            try:
                return await method(**arguments)
            except Exception as exc:
                if resend and not resent and stale_connection(exc):
                    continue  # a pooled connection the server had closed: resend once
                raise self._failure(exc, operation, arguments.get("modelId")) from exc
        raise AssertionError("unreachable")

    # ── errors ───────────────────────────────────────────────────────────────────

    def _failure(self, exc: Exception, operation: str, model: str | None) -> LLMError:
        """The LLMError for what botocore, aiohttp or the event stream raised."""
        from botocore import eventstream  # type: ignore[import-untyped]
        from botocore import exceptions as boto

        if isinstance(exc, LLMError):
            return exc
        if isinstance(exc, boto.ClientError):  # also the stream's exception events
            return self._client_error(exc, operation, model or self.model)
        if isinstance(exc, boto.NoCredentialsError):
            return LLMConfigurationError(
                f"No AWS credentials were found for {self.spec.display_name}: {CREDENTIAL_CHAIN}",
                provider=self.spec.provider,
            )
        if isinstance(
            exc,
            boto.PartialCredentialsError
            | boto.CredentialRetrievalError
            | boto.TokenRetrievalError
            | boto.ProfileNotFound
            | boto.ConfigParseError,
        ):
            return LLMConfigurationError(
                f"The AWS credentials for {self.spec.display_name} cannot be used "
                f"({short_reason(str(exc))}): {CREDENTIAL_CHAIN}",
                provider=self.spec.provider,
            )
        if isinstance(exc, boto.ParamValidationError):
            return LLMInvalidRequestError(
                f"The request cannot be sent to {self.spec.display_name}: {short_reason(str(exc))}",
                provider=self.spec.provider,
            )
        if isinstance(exc, boto.ConnectTimeoutError):
            return self.timeout_error(accepted=False)
        if isinstance(exc, boto.ReadTimeoutError | TimeoutError):
            return self.timeout_error(accepted=True)
        if isinstance(exc, boto.ConnectionError):  # refused, DNS, TLS, proxy
            return self.connection_error()
        if isinstance(exc, boto.HTTPClientError | aiohttp.ClientError | OSError):
            return self.broken_reply_error()  # connected, then the reply broke off
        if isinstance(exc, eventstream.ParserError | ValueError):
            return self.invalid_reply_error("an event stream that cannot be read")
        raise exc  # a bug of ours, not an upstream failure

    def _client_error(self, exc: Any, operation: str, model: str) -> LLMError:
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "")
        code = code[:1].upper() + code[1:]  # stream exception events are camelCase
        message = str(error.get("Message") or code or "no reason given")
        metadata = exc.response.get("ResponseMetadata", {})
        status = metadata.get("HTTPStatusCode") or 500
        name, url, provider = self.spec.display_name, self.url, self.spec.provider
        if code == "ThrottlingException":
            retry_after = metadata.get("HTTPHeaders", {}).get("retry-after")
            seconds = float(retry_after) if retry_after and retry_after.isdigit() else None
            return self.status_error(429, message, retry_after=seconds)
        if code in ("ServiceUnavailableException", "InternalServerException"):
            return self.status_error(503 if code.startswith("Service") else 500, message)
        if code == "ModelNotReadyException":
            return LLMUpstreamError(
                f"{name} at {url}: model '{model}' is not ready to serve requests yet "
                f"(ModelNotReadyException: {short_reason(message)}); try again shortly",
                provider=provider,
                upstream=url,
                upstream_status=503,
            )
        if code == "ValidationException":
            return self.status_error(400, message)
        if code == "ResourceNotFoundException":
            return LLMModelNotFoundError(
                f"Model '{model}' is not available on {name} at {url} in region "
                f"{self.config.region}: {short_reason(message)}",
                provider=provider,
                upstream=url,
            )
        if code == "ModelTimeoutException":
            return LLMTimeoutError(
                f"{name} at {url}: model '{model}' took longer than Bedrock allows "
                f"(ModelTimeoutException: {short_reason(message)}); it was not sent again. "
                "Ask for fewer tokens (max_tokens) or use a faster model.",
                provider=provider,
                upstream=url,
                accepted=True,
            )
        if code == "ModelStreamErrorException":
            return self.stream_error(message)
        if code == "AccessDeniedException":
            # The upstream's text names the account's identity, so it is not repeated.
            permission = PERMISSIONS.get(operation, "bedrock:InvokeModel")
            access = (
                f", and access to model '{model}' must be granted in the Bedrock console "
                f"(Model access) in {self.config.region}"
                if operation.startswith(("converse", "invoke"))
                else ""
            )
            return LLMConfigurationError(
                f"{name} at {url} denied access (AccessDeniedException): the AWS identity "
                f"in use needs the IAM permission {permission}{access}",
                provider=provider,
                upstream=url,
            )
        if code in AUTH_CODES or status in (401, 403):
            return LLMAuthenticationError(
                f"{name} at {url} rejected the credentials ({code or status}): check the "
                "AWS credentials in use (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / "
                "AWS_SESSION_TOKEN, AWS_PROFILE, or the instance role) or the Bedrock API "
                "key in AWS_BEARER_TOKEN_BEDROCK",
                provider=provider,
                upstream=url,
                upstream_status=status,
            )
        return self.status_error(status, message)


def _closer(pool: _Pool, key: tuple[str, ...], clients: _Clients) -> Callable[[], Awaitable[None]]:
    async def close() -> None:
        pool.clients.pop(key, None)
        for client in (clients.control, clients.runtime):
            await client.__aexit__(None, None, None)

    return close


def converse_messages(
    messages: Sequence[Message],
) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """OpenAI-style messages as Converse's `system` blocks and `messages`; consecutive
    messages of one role are merged (Converse wants user and assistant to alternate) and
    blank text is dropped (Converse rejects blank blocks)."""
    system: list[dict[str, str]] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        text = _text_of(message.get("content"))
        role = message.get("role")
        blocks: list[dict[str, Any]] = [{"text": text}] if text.strip() else []
        if role == "tool":
            # A tool's result is a user turn's toolResult block (Converse's shape).
            result: dict[str, Any] = {"text": text} if text.strip() else {"json": {}}
            use_id = str(message.get("tool_call_id", ""))
            blocks = [{"toolResult": {"toolUseId": use_id, "content": [result]}}]
        elif role == "assistant":
            blocks += [
                {
                    "toolUse": {
                        "toolUseId": str(call.get("id", "")),
                        "name": str(_dict(call.get("function")).get("name", "")),
                        "input": parsed_arguments(call),
                    }
                }
                for call in calls_in(message)
            ]
        if not blocks:
            continue
        if role in ("system", "developer"):
            system.append({"text": text})
        elif turns and turns[-1]["role"] == ("assistant" if role == "assistant" else "user"):
            turns[-1]["content"].extend(blocks)
        else:
            turns.append(
                {"role": "assistant" if role == "assistant" else "user", "content": blocks}
            )
    return system, turns


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _tool_calls(blocks: list[dict[str, Any]]) -> tuple[ToolCall, ...]:
    """The toolUse blocks of a Converse reply as tool calls; ValueError for a malformed one."""
    uses = [block["toolUse"] for block in blocks if "toolUse" in block]
    return tuple(
        checked_call(
            _dict(use).get("toolUseId"),
            _dict(use).get("name"),
            _dict(use).get("input"),
            f"toolUse {i}",
        )
        for i, use in enumerate(uses)
    )


class _StreamedCalls:
    """ConverseStream's tool blocks as OpenAI's streamed tool calls: a contentBlockStart
    opens call N (its id and name), each delta's `toolUse.input` is a fragment of its
    arguments, and a call whose input stayed empty gets `{}` at its contentBlockStop."""

    def __init__(self) -> None:
        self.index: dict[int, int] = {}  # contentBlockIndex → the call's index
        self.filled: set[int] = set()

    def start(self, event: dict[str, Any]) -> ToolCallDelta | None:
        use = _dict(_dict(event.get("start")).get("toolUse"))
        if not use:
            return None
        name, use_id = use.get("name"), use.get("toolUseId")
        if (
            not isinstance(name, str)
            or not isinstance(use_id, str)
            or len(self.index) >= MAX_TOOL_CALLS
        ):
            raise ValueError("a toolUse block without a name and an id")
        call = checked_call(use_id, name, "", f"toolUse {len(self.index)}")
        index = self.index[event.get("contentBlockIndex", -1)] = len(self.index)
        return ToolCallDelta(index, call.id, call.name)

    def fragment(self, event: dict[str, Any], text: str) -> ToolCallDelta | None:
        index = self.index.get(event.get("contentBlockIndex", -1))
        if index is None:
            raise ValueError("tool input for a block that is no toolUse")
        self.filled.add(index)
        return ToolCallDelta(index, arguments=text)

    def stop(self, event: dict[str, Any]) -> ToolCallDelta | None:
        index = self.index.get(event.get("contentBlockIndex", -1))
        if index is None or index in self.filled:
            return None
        return ToolCallDelta(index, arguments="{}")


def _text_of(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI's content parts
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _structured(response_format: dict[str, Any] | None, arguments: dict[str, Any]) -> bool:
    """Add Converse's structured output to `arguments`; True when it is a forced tool.

    json_schema: `outputConfig` for the models `NATIVE_SCHEMA_MODELS` names, else a forced
    tool with the schema as its input schema. json_object: a forced tool whose input is any
    object (Converse has no schema-less JSON mode).
    """
    kind = (response_format or {}).get("type")
    if kind == "json_schema":
        assert response_format is not None
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema") or {"type": "object"}
        name = re.sub(r"[^a-zA-Z0-9_-]", "_", str(spec.get("name") or FORCED_TOOL))[:64]
        if native_schema_supported(arguments["modelId"]):
            structure = {"jsonSchema": {"schema": json.dumps(schema), "name": name}}
            arguments["outputConfig"] = {
                "textFormat": {"type": "json_schema", "structure": structure}
            }
            return False
    elif kind == "json_object":
        name, schema = FORCED_TOOL, {"type": "object"}
    else:
        return False
    tool = {
        "name": name,
        "description": "Give your complete answer as this tool's input.",
        "inputSchema": {"json": schema},
    }
    arguments["toolConfig"] = {
        "tools": [{"toolSpec": tool}],
        "toolChoice": {"tool": {"name": name}},
    }
    return True


def _finish_reason(stop_reason: object, forced: bool) -> str | None:
    if not isinstance(stop_reason, str):
        return None
    if stop_reason == "tool_use":
        return "stop" if forced else "tool_calls"
    return FINISH_REASONS.get(stop_reason, stop_reason)


def _usage(usage: object) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    counts = [usage.get(key) for key in ("inputTokens", "outputTokens")]
    prompt, completion = (c if isinstance(c, int) and c >= 0 else 0 for c in counts)
    return Usage(prompt_tokens=prompt, completion_tokens=completion)


def _model_info(model_id: str, summary: dict[str, Any]) -> ModelInfo:
    return ModelInfo(
        id=model_id,
        type="llm",
        publisher=summary.get("providerName"),
        structured_output=True if native_schema_supported(model_id) else None,
    )


# ── the provider mapping's entry ─────────────────────────────────────────────────


def _config_from(settings: Settings, model: str) -> BedrockConfig:
    region = settings.aws_region
    return BedrockConfig(
        base_url=settings.bedrock_endpoint_url or f"https://bedrock-runtime.{region}.amazonaws.com",
        default_model=model,
        region=region,
        endpoint_url=settings.bedrock_endpoint_url,
        bearer_token=settings.aws_bearer_token_bedrock,
        timeout=settings.bedrock_timeout,
        max_retries=settings.bedrock_max_retries,
    )


def _credentials_set(settings: Settings) -> bool:
    """A Bedrock API key, or something the AWS chain reads without a network call."""
    token = settings.aws_bearer_token_bedrock
    if token is not None and token.get_secret_value():
        return True
    if any(os.environ.get(name) for name in CHAIN_ENV):
        return True
    shared = Path(os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials")
    try:
        return "aws_access_key_id" in shared.expanduser().read_text(errors="replace").lower()
    except OSError:
        return False


def _missing_credentials(_settings: Settings) -> str | None:
    # The credential chain decides at call time (instance roles, SSO, …); none found then
    # is a configuration error naming the chain.
    return None


SPEC = ProviderSpec(
    provider=LLMProvider.BEDROCK,
    display_name="AWS Bedrock",
    env_prefix="BEDROCK",
    connection_hint=(
        "check AWS_REGION (Bedrock must be offered there), BEDROCK_ENDPOINT_URL if set, and "
        "this machine's network"
    ),
    local=False,
    config_from=_config_from,
    make_wire=BedrockWire,
    credentials_set=_credentials_set,
    missing_credentials=_missing_credentials,
)
