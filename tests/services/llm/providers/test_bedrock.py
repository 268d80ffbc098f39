"""The Bedrock wire (aiobotocore) against a stand-in speaking Bedrock's real wire: SigV4 or
bearer-signed rest-json, binary event streams, AWS JSON errors.

Static fake credentials and AWS_EC2_METADATA_DISABLED keep botocore's credential chain off
the network; every request goes to 127.0.0.1.
"""

from __future__ import annotations

import ast
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.eventstream import (  # type: ignore[import-untyped]
    ChecksumMismatch,
    EventStreamBuffer,
)

from app.core.config import Settings
from app.services.llm.calls import ProviderService
from app.services.llm.errors import (
    LLMAuthenticationError,
    LLMBadRequestError,
    LLMConfigurationError,
    LLMConnectionError,
    LLMError,
    LLMModelNotFoundError,
    LLMRateLimitError,
    LLMTimeoutError,
    LLMUpstreamError,
)
from app.services.llm.protocol import ChatRequest, Message, ProviderWire, StreamChunk
from app.services.llm.providers import bedrock as bedrock_module
from app.services.llm.providers.bedrock import SPEC, converse_messages, native_schema_supported
from app.services.llm.providers.clients import close_clients
from tests.conftest import AWS_CREDENTIAL_VARIABLES
from tests.services.llm.streams import after_acceptance
from tests.upstream import unanswered_connect_url, unused_url
from tests.upstream.bedrock_server import (
    ACCESS_KEY,
    API_KEY,
    SECRET_KEY,
    BedrockStandIn,
    encode_event,
)

HAIKU = "us.anthropic.claude-3-5-haiku-20241022-v1:0"  # an inference profile
SONNET_45 = "anthropic.claude-sonnet-4-5-20250929-v1:0"  # native structured output
NOVA = "amazon.nova-lite-v1:0"
HELLO: list[Message] = [{"role": "user", "content": "hello there"}]
CITY = {
    "type": "json_schema",
    "json_schema": {
        "name": "City",
        "schema": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "population": {"type": "integer"}},
            "required": ["name", "population"],
        },
    },
}
AWS_VARIABLES = (*AWS_CREDENTIAL_VARIABLES, "AWS_DEFAULT_REGION", "AWS_REGION")


@pytest.fixture(scope="module")
def bedrock_server() -> Iterator[BedrockStandIn]:
    with BedrockStandIn() as server:
        yield server


@pytest.fixture(scope="module")
async def pooled_clients() -> AsyncIterator[None]:
    """The wire's pooled clients, closed when the module is done."""
    yield
    await close_clients()


@pytest.fixture
def bedrock(
    bedrock_server: BedrockStandIn,
    pooled_clients: None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[BedrockStandIn]:
    """The stand-in, reset; the AWS environment: static fake keys and nothing else."""
    for name in AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    empty = tmp_path / "aws-empty"
    empty.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    bedrock_server.reset()
    yield bedrock_server
    bedrock_server.reset()


@pytest.fixture
async def fresh_clients() -> AsyncIterator[None]:
    """For a test that changes the credentials: botocore resolves them when a client is
    made, so the pooled clients are closed before and after it."""
    await close_clients()
    yield
    await close_clients()


def settings(endpoint: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"bedrock_endpoint_url": endpoint, "bedrock_timeout": 2}
    return Settings(_env_file=None, **(values | overrides))


def wire(endpoint: str, model: str = HAIKU, **overrides: Any) -> ProviderWire:
    return SPEC.make_wire(SPEC, SPEC.config_from(settings(endpoint, **overrides), model))


def ask(model: str = HAIKU, messages: list[Message] = HELLO, **fields: Any) -> ChatRequest:
    return ChatRequest(model=model, messages=messages, **fields)


async def collect(
    llm: ProviderWire, request: ChatRequest, seen: list[str] | None = None
) -> list[StreamChunk]:
    """The stream's chunks after the upstream's acceptance (checked: the first one); `seen`
    gets each text as it arrives (for streams that fail)."""
    chunks = []
    async for chunk in after_acceptance(llm.stream(request)):
        chunks.append(chunk)
        if seen is not None:
            seen.append(chunk.text)
    return chunks


# ── text and streams ──────────────────────────────────────────────────────────────


async def test_converse_signed_with_sigv4(bedrock: BedrockStandIn) -> None:
    messages: list[Message] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello there"},
    ]
    request = ask(messages=messages, temperature=0.2, max_tokens=50, stop="END", seed=7)
    reply = await wire(bedrock.url).complete(request)
    assert (reply.text, reply.finish_reason) == ("Echo: hello there", "stop")
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (2, 3)
    sent = bedrock.converse_requests[0]
    assert sent.path == f"/model/{HAIKU}/converse"
    assert sent.json == {
        "messages": [{"role": "user", "content": [{"text": "hello there"}]}],
        "system": [{"text": "Be brief."}],
        "inferenceConfig": {"maxTokens": 50, "temperature": 0.2, "stopSequences": ["END"]},
    }
    # The stand-in verified the signature with the secret key; the scope names Bedrock.
    assert sent.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")
    assert "/us-east-1/bedrock/aws4_request" in sent.headers["authorization"]


async def test_stream_deltas_then_finish_and_usage(bedrock: BedrockStandIn) -> None:
    chunks = await collect(wire(bedrock.url), ask())
    assert [c.text for c in chunks[:-1]] == ["Echo:", " hello", " there"]
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3
    assert bedrock.converse_requests[0].path == f"/model/{HAIKU}/converse-stream"


async def test_max_tokens_is_length(bedrock: BedrockStandIn) -> None:
    llm = wire(bedrock.url)
    reply = await llm.complete(ask(max_tokens=2))
    assert (reply.text, reply.finish_reason) == ("Echo: hello", "length")
    chunks = await collect(llm, ask(max_tokens=2))
    assert "".join(c.text for c in chunks) == "Echo: hello"
    assert chunks[-1].finish_reason == "length"


def test_messages_alternate_and_system_goes_apart() -> None:
    system, turns = converse_messages(
        [
            {"role": "system", "content": "rule one"},
            {"role": "user", "content": "a"},
            {"role": "user", "content": [{"type": "text", "text": "b"}]},
            {"role": "developer", "content": "rule two"},
            {"role": "assistant", "content": "c"},
            {"role": "assistant", "content": "  "},
            {"role": "user", "content": "d"},
        ]
    )
    assert system == [{"text": "rule one"}, {"text": "rule two"}]
    assert turns == [
        {"role": "user", "content": [{"text": "a"}, {"text": "b"}]},
        {"role": "assistant", "content": [{"text": "c"}]},
        {"role": "user", "content": [{"text": "d"}]},
    ]


# ── structured output ─────────────────────────────────────────────────────────────


async def test_json_schema_as_a_forced_tool(bedrock: BedrockStandIn) -> None:
    llm = wire(bedrock.url, NOVA)
    bedrock.reply_tool({"name": "Lyon", "population": 522_000})
    reply = await llm.complete(ask(NOVA, response_format=CITY))
    assert json.loads(reply.text) == {"name": "Lyon", "population": 522_000}
    assert reply.finish_reason == "stop"
    sent = bedrock.converse_requests[0].json
    assert sent["toolConfig"] == {
        "tools": [
            {
                "toolSpec": {
                    "name": "City",
                    "description": "Give your complete answer as this tool's input.",
                    "inputSchema": {"json": CITY["json_schema"]["schema"]},  # type: ignore[index]
                }
            }
        ],
        "toolChoice": {"tool": {"name": "City"}},
    }
    assert "outputConfig" not in sent
    bedrock.reply_tool({"name": "Nantes", "population": 320_000})
    chunks = await collect(llm, ask(NOVA, response_format=CITY))
    assert len(chunks) > 3  # the tool's input arrives in pieces
    assert json.loads("".join(c.text for c in chunks)) == {"name": "Nantes", "population": 320_000}
    assert chunks[-1].finish_reason == "stop"


async def test_json_schema_natively_where_the_model_has_it(bedrock: BedrockStandIn) -> None:
    assert native_schema_supported(SONNET_45)
    assert native_schema_supported("global.anthropic.claude-opus-4-6-v1")
    assert not native_schema_supported(HAIKU)
    assert not native_schema_supported("anthropic.claude-sonnet-4-20250514-v1:0")
    reply = await wire(bedrock.url, SONNET_45).complete(ask(SONNET_45, response_format=CITY))
    assert set(json.loads(reply.text)) == {"name", "population"}
    sent = bedrock.converse_requests[0].json
    assert "toolConfig" not in sent
    json_schema = sent["outputConfig"]["textFormat"]["structure"]["jsonSchema"]
    assert sent["outputConfig"]["textFormat"]["type"] == "json_schema"
    assert json_schema["name"] == "City"
    assert json.loads(json_schema["schema"]) == CITY["json_schema"]["schema"]  # type: ignore[index]


async def test_json_object_is_a_forced_tool_taking_any_object(bedrock: BedrockStandIn) -> None:
    bedrock.reply_tool({"anything": [1, 2]})
    reply = await wire(bedrock.url).complete(ask(response_format={"type": "json_object"}))
    assert json.loads(reply.text) == {"anything": [1, 2]}
    tool = bedrock.converse_requests[0].json["toolConfig"]["tools"][0]["toolSpec"]
    assert tool["inputSchema"] == {"json": {"type": "object"}}


# ── errors ────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("code", "kind", "retryable", "says"),
    [
        ("ThrottlingException", LLMRateLimitError, True, "rate limiting"),
        ("ModelNotReadyException", LLMUpstreamError, True, "not ready"),
        ("ServiceUnavailableException", LLMUpstreamError, True, "HTTP 503"),
        ("InternalServerException", LLMUpstreamError, True, "HTTP 500"),
        ("ValidationException", LLMBadRequestError, False, "stand-in ValidationException"),
        ("ResourceNotFoundException", LLMModelNotFoundError, False, f"Model '{HAIKU}'"),
        ("ModelTimeoutException", LLMTimeoutError, False, "not sent again"),
        ("ModelErrorException", LLMUpstreamError, False, "HTTP 424"),
        ("AccessDeniedException", LLMConfigurationError, False, "bedrock:InvokeModel,"),
        ("UnrecognizedClientException", LLMAuthenticationError, False, "AWS_BEARER_TOKEN"),
    ],
)
async def test_errors_map_to_llm_errors(
    bedrock: BedrockStandIn, code: str, kind: type[LLMError], retryable: bool, says: str
) -> None:
    bedrock.fail(code)
    with pytest.raises(kind) as caught:
        await wire(bedrock.url).complete(ask())
    assert type(caught.value) is kind
    assert caught.value.retryable is retryable
    assert says in caught.value.message
    assert len(bedrock.converse_requests) == 1  # botocore itself does not retry


async def test_stream_access_denied_names_its_permission(bedrock: BedrockStandIn) -> None:
    bedrock.fail("AccessDeniedException", "User: arn:aws:iam::123456789012:user/x is not …")
    with pytest.raises(LLMConfigurationError) as caught:
        await collect(wire(bedrock.url), ask())
    assert "bedrock:InvokeModelWithResponseStream" in caught.value.message
    assert "Model access" in caught.value.message
    assert "123456789012" not in caught.value.message


async def test_throttling_passes_retry_after_on(bedrock: BedrockStandIn) -> None:
    bedrock.fail("ThrottlingException", headers={"Retry-After": "3"})
    with pytest.raises(LLMRateLimitError) as caught:
        await wire(bedrock.url).complete(ask())
    assert caught.value.retry_after == 3


@pytest.mark.parametrize(
    ("exception_type", "kind", "retryable"),
    [
        ("modelStreamErrorException", LLMUpstreamError, False),
        ("throttlingException", LLMRateLimitError, True),
        ("validationException", LLMBadRequestError, False),
        ("internalServerException", LLMUpstreamError, True),
        ("serviceUnavailableException", LLMUpstreamError, True),
    ],
)
async def test_exception_event_mid_stream(
    bedrock: BedrockStandIn, exception_type: str, kind: type[LLMError], retryable: bool
) -> None:
    bedrock.exception_event(exception_type, "the model broke", after_deltas=2)
    seen: list[str] = []
    with pytest.raises(kind) as caught:
        await collect(wire(bedrock.url), ask(), seen)
    assert seen == ["Echo:", " hello"]
    assert type(caught.value) is kind
    assert caught.value.retryable is retryable
    assert "the model broke" in caught.value.message
    if exception_type == "modelStreamErrorException":
        assert "mid-stream" in caught.value.message


async def test_a_cut_stream_is_a_broken_reply(bedrock: BedrockStandIn) -> None:
    bedrock.cut(after_deltas=1)
    seen: list[str] = []
    with pytest.raises(LLMUpstreamError) as caught:
        await collect(wire(bedrock.url), ask(), seen)
    assert seen == ["Echo:"]
    assert caught.value.retryable
    assert "before its reply was complete" in caught.value.message


async def test_a_stream_cut_after_its_stop_event_only_loses_its_usage(
    bedrock: BedrockStandIn,
) -> None:
    bedrock.cut(after_deltas=5)  # 3 deltas, contentBlockStop, messageStop; no metadata
    chunks = await collect(wire(bedrock.url), ask())
    assert "".join(c.text for c in chunks) == "Echo: hello there"
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage is None


async def test_a_connection_closed_before_any_reply_is_sent_once_more(
    bedrock: BedrockStandIn,
) -> None:
    bedrock.cut()  # as a pooled keep-alive connection the server had closed
    assert (await wire(bedrock.url).complete(ask())).text == "Echo: hello there"
    assert len(bedrock.converse_requests) == 2
    bedrock.reset()
    bedrock.cut(times=2)
    with pytest.raises(LLMUpstreamError) as caught:
        await wire(bedrock.url).complete(ask())
    assert caught.value.retryable
    assert len(bedrock.converse_requests) == 2


@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
async def test_a_stale_connection_is_resent_on_the_first_attempt_only(
    bedrock: BedrockStandIn, streamed: bool
) -> None:
    bedrock.drop(times=None)  # a server hanging up on every request
    config = SPEC.config_from(settings(bedrock.url, bedrock_max_retries=1), HAIKU)
    llm = ProviderService(SPEC, config, retry_backoff=0.01)

    async def call() -> object:
        if streamed:
            return [chunk async for chunk in llm.stream_chunks(HELLO)]
        return await llm.complete(HELLO)

    with pytest.raises(LLMUpstreamError) as caught:
        await call()
    assert caught.value.retryable
    # The first attempt, its resend over a fresh connection, the one retry (not resent).
    assert len(bedrock.converse_requests) == 3


async def test_a_corrupt_frame_is_an_invalid_reply(bedrock: BedrockStandIn) -> None:
    bedrock.corrupt(after_deltas=1)
    with pytest.raises(LLMUpstreamError) as caught:
        await collect(wire(bedrock.url), ask())
    assert "event stream that cannot be read" in caught.value.message
    assert not caught.value.retryable


async def test_read_timeouts_are_not_retried(bedrock: BedrockStandIn) -> None:
    llm = wire(bedrock.url, bedrock_timeout=1)
    bedrock.stall(3)
    with pytest.raises(LLMTimeoutError) as caught:
        await llm.complete(ask())
    assert not caught.value.retryable
    assert "within 1 s" in caught.value.message
    bedrock.stall(3, after_deltas=1)
    with pytest.raises(LLMTimeoutError) as caught:
        await collect(llm, ask())
    assert not caught.value.retryable


async def test_refused_and_unanswered_connects_are_retryable(bedrock: BedrockStandIn) -> None:
    with pytest.raises(LLMConnectionError) as refused:
        await wire(unused_url().removesuffix("/v1")).complete(ask())
    assert refused.value.retryable
    assert "AWS_REGION" in refused.value.message
    with unanswered_connect_url() as url, pytest.raises(LLMTimeoutError) as unanswered:
        await wire(url.removesuffix("/v1"), bedrock_timeout=1).complete(ask())
    assert unanswered.value.retryable
    assert "did not accept a connection" in unanswered.value.message


async def test_closing_a_stream_early_closes_the_response(bedrock: BedrockStandIn) -> None:
    bedrock.stall(5, after_deltas=2)
    stream = wire(bedrock.url).stream(ask())
    assert await anext(stream) == StreamChunk()  # accepted
    assert (await anext(stream)).text == "Echo:"
    await stream.aclose()  # type: ignore[attr-defined]
    assert await bedrock.wait_for_disconnect(1.0)


# ── credentials ───────────────────────────────────────────────────────────────────


@pytest.mark.usefixtures("fresh_clients")
async def test_a_bedrock_api_key_is_sent_as_bearer(
    bedrock: BedrockStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    llm = wire(bedrock.url, aws_bearer_token_bedrock=API_KEY)
    assert (await llm.complete(ask())).text == "Echo: hello there"
    assert bedrock.converse_requests[0].headers["authorization"] == f"Bearer {API_KEY}"
    with pytest.raises(LLMAuthenticationError) as caught:
        await wire(bedrock.url, aws_bearer_token_bedrock="not-a-key").complete(ask())
    assert "AWS_BEARER_TOKEN_BEDROCK" in caught.value.message
    assert "not-a-key" not in caught.value.message


@pytest.mark.usefixtures("fresh_clients")
@pytest.mark.parametrize(
    ("key_id", "secret", "code"),
    [
        ("AKIAUNKNOWN000000000", SECRET_KEY, "UnrecognizedClientException"),
        (ACCESS_KEY, "a-wrong-secret", "InvalidSignatureException"),
    ],
)
async def test_rejected_aws_credentials(
    bedrock: BedrockStandIn, monkeypatch: pytest.MonkeyPatch, key_id: str, secret: str, code: str
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    with pytest.raises(LLMAuthenticationError) as caught:
        await wire(bedrock.url).complete(ask())
    assert f"rejected the credentials ({code})" in caught.value.message
    assert secret not in caught.value.message


@pytest.mark.usefixtures("fresh_clients")
async def test_no_credentials_explains_the_chain(
    bedrock: BedrockStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    assert not SPEC.credentials_set(settings(bedrock.url))
    assert SPEC.missing_credentials(settings(bedrock.url)) is None
    with pytest.raises(LLMConfigurationError) as caught:
        await wire(bedrock.url).complete(ask())
    assert "No AWS credentials were found" in caught.value.message
    assert "AWS_BEARER_TOKEN_BEDROCK" in caught.value.message
    assert "AWS_ACCESS_KEY_ID" in caught.value.message
    assert bedrock.requests == []  # nothing unsigned was sent


def test_credentials_set_is_a_cheap_local_check(
    bedrock: BedrockStandIn, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert SPEC.credentials_set(settings(bedrock.url))  # AWS_ACCESS_KEY_ID
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    assert not SPEC.credentials_set(settings(bedrock.url))
    assert SPEC.credentials_set(settings(bedrock.url, aws_bearer_token_bedrock=API_KEY))
    monkeypatch.setenv("AWS_PROFILE", "work")
    assert SPEC.credentials_set(settings(bedrock.url))
    monkeypatch.delenv("AWS_PROFILE")
    credentials = tmp_path / "credentials"
    credentials.write_text("[default]\nregion = eu-west-3\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    assert not SPEC.credentials_set(settings(bedrock.url))  # a file without keys
    credentials.write_text("[default]\naws_access_key_id = AKIA0\n")
    assert SPEC.credentials_set(settings(bedrock.url))


def test_config_from_settings() -> None:
    config = SPEC.config_from(settings("http://127.0.0.1:9"), HAIKU)
    assert config.base_url == "http://127.0.0.1:9"
    plain = Settings(_env_file=None, aws_region="eu-west-3", bedrock_timeout=30)
    config = SPEC.config_from(plain, HAIKU)
    assert config.base_url == "https://bedrock-runtime.eu-west-3.amazonaws.com"
    assert (config.timeout, config.default_model) == (30, HAIKU)
    assert SPEC.base_url(plain) == "https://bedrock-runtime.eu-west-3.amazonaws.com"


# ── discovery ─────────────────────────────────────────────────────────────────────


async def test_discovery_keeps_streaming_text_models_and_their_profiles(
    bedrock: BedrockStandIn,
) -> None:
    models = await wire(bedrock.url).list_models()
    assert [m.id for m in models] == [
        # haiku 3.5 is offered through its profile only; titan-embed and nova-canvas do
        # not write text, command-r does not stream
        SONNET_45,
        NOVA,
        "mistral.mistral-large-2402-v1:0",
        HAIKU,
        "global.anthropic.claude-sonnet-4-5-20250929-v1:0",  # nova-canvas's profile is not
    ]
    assert models[0].publisher == "Anthropic"
    assert models[0].structured_output is True
    assert models[1].structured_output is None
    listing, *pages = [r for r in bedrock.requests]
    assert (listing.path, listing.query) == ("/foundation-models", {"byOutputModality": "TEXT"})
    assert [p.query.get("nextToken") for p in pages] == [None, "2"]
    assert {p.query["type"] for p in pages} == {"SYSTEM_DEFINED"}


async def test_discovery_follows_at_most_ten_pages(bedrock: BedrockStandIn) -> None:
    bedrock.profiles = [(f"us.amazon.nova-lite-v1:0-{i}", (NOVA,)) for i in range(40)]
    models = await wire(bedrock.url).list_models()
    assert len([r for r in bedrock.requests if r.route == "profiles"]) == 10
    assert len([m for m in models if m.id.startswith("us.amazon.nova-lite")]) == 20


async def test_discovery_errors_name_the_control_plane_permission(
    bedrock: BedrockStandIn,
) -> None:
    bedrock.fail("AccessDeniedException", route="models")
    with pytest.raises(LLMConfigurationError) as caught:
        await wire(bedrock.url).list_models()
    assert "bedrock:ListFoundationModels" in caught.value.message
    bedrock.fail("ThrottlingException", route="profiles")
    with pytest.raises(LLMRateLimitError):
        await wire(bedrock.url).list_models()


# ── the stand-in's framing, and what importing the module costs ───────────────────


def test_event_frames_decode_with_botocore() -> None:
    frame = encode_event({":event-type": "messageStop", ":message-type": "event"}, b'{"a": 1}')
    buffer = EventStreamBuffer()
    buffer.add_data(frame + frame[:7])  # a whole frame and the start of the next
    (message,) = list(buffer)
    assert message.headers == {":event-type": "messageStop", ":message-type": "event"}
    assert message.payload == b'{"a": 1}'
    broken = EventStreamBuffer()
    broken.add_data(frame[:-1] + bytes([frame[-1] ^ 1]))
    with pytest.raises(ChecksumMismatch):
        list(broken)


def test_the_sdk_is_imported_only_inside_functions() -> None:
    module = ast.parse(Path(bedrock_module.__file__).read_text())
    top_level = [node for node in module.body if isinstance(node, ast.Import | ast.ImportFrom)]
    imported = {alias.name for node in top_level for alias in node.names} | {
        node.module for node in top_level if isinstance(node, ast.ImportFrom)
    }
    assert imported
    assert not any("botocore" in str(name) for name in imported)
