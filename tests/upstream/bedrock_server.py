"""A stand-in AWS Bedrock (runtime and control plane) on a real loopback socket.

``BedrockStandIn`` runs an aiohttp app in a daemon thread with its own event loop and speaks
Bedrock's wire as botocore does (rest-json, protocol of both services' models):

- ``POST /model/{modelId}/converse``: Converse, a JSON reply;
- ``POST /model/{modelId}/converse-stream``: ConverseStream, ``application/vnd.amazon.eventstream``
  binary frames (``encode_event``), the events ``messageStart``, ``contentBlockStart``,
  ``contentBlockDelta``, ``contentBlockStop``, ``messageStop``, ``metadata``, and exception
  events (``:message-type: exception``);
- ``POST /model/{modelId}/invoke``: InvokeModel for embedding models, in each family's body
  (Amazon Titan: ``inputText``, ``dimensions`` for v2 → ``embedding``,
  ``inputTextTokenCount``; Cohere Embed: ``texts`` (at most 96), ``input_type`` →
  ``embeddings``), the tokens in ``X-Amzn-Bedrock-Input-Token-Count``;
- ``GET /foundation-models`` (ListFoundationModels) and ``GET /inference-profiles``
  (ListInferenceProfiles, paginated with ``nextToken``);
- errors as AWS JSON errors: the ``x-amzn-ErrorType`` header, ``{"message": ...}`` and the
  status the service model gives the exception.

Every request must be signed: SigV4 with a known access key (the signature is verified with
botocore's own signer) or ``Authorization: Bearer`` with a known Bedrock API key. Scripts are
kept in one FIFO queue, as in ``tests/upstream/server.py``::

    with BedrockStandIn() as bedrock:
        bedrock.fail("ThrottlingException")         # the next Converse call gets a 429
        bedrock.reply("hello", stop_reason="max_tokens")
        bedrock.exception_event("modelStreamErrorException", after_deltas=2)
        ...
        assert bedrock.requests[0].json["messages"][0]["role"] == "user"
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from aiohttp import web

from . import embedding
from .completion import split_tokens
from .schema_gen import example_for_schema
from .threaded import ThreadedApp
from .tool_use import plan_tool_call, tool_result_text

__all__ = [
    "ACCESS_KEY",
    "API_KEY",
    "DEFAULT_MODELS",
    "DEFAULT_PROFILES",
    "ERROR_STATUS",
    "SECRET_KEY",
    "BedrockStandIn",
    "FoundationModel",
    "RecordedRequest",
    "encode_event",
]

Route: TypeAlias = Literal["converse", "invoke", "models", "profiles", "any"]

ACCESS_KEY = "AKIASTANDIN000000001"
SECRET_KEY = "stand-in-secret-access-key-0000000000000"
API_KEY = "bedrock-api-key-stand-in-0123456789"

# Each exception's HTTP status, from botocore's service models (bedrock-runtime 2023-09-30,
# bedrock 2023-04-20), plus the authentication errors AWS's front end answers with.
ERROR_STATUS: dict[str, int] = {
    "AccessDeniedException": 403,
    "ThrottlingException": 429,
    "ResourceNotFoundException": 404,
    "ModelTimeoutException": 408,
    "InternalServerException": 500,
    "ServiceUnavailableException": 503,
    "ValidationException": 400,
    "ModelNotReadyException": 429,
    "ModelErrorException": 424,
    "ModelStreamErrorException": 424,
    "UnrecognizedClientException": 403,
    "InvalidSignatureException": 403,
    "MissingAuthenticationTokenException": 403,
}
_JSON = "application/json"
_EVENTSTREAM = "application/vnd.amazon.eventstream"
_SIGV4 = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, SignedHeaders=(?P<signed>[^,]+), "
    r"Signature=(?P<signature>[0-9a-f]+)"
)


@dataclass(frozen=True)
class FoundationModel:
    """One entry of ListFoundationModels."""

    model_id: str
    provider: str = "Anthropic"
    output_modalities: tuple[str, ...] = ("TEXT",)
    streaming: bool = True
    inference_types: tuple[str, ...] = ("ON_DEMAND",)

    def summary(self, region: str) -> dict[str, Any]:
        """The `FoundationModelSummary` Bedrock sends."""
        return {
            "modelArn": f"arn:aws:bedrock:{region}::foundation-model/{self.model_id}",
            "modelId": self.model_id,
            "modelName": self.model_id.split(".", 1)[-1],
            "providerName": self.provider,
            "inputModalities": ["TEXT"],
            "outputModalities": list(self.output_modalities),
            "responseStreamingSupported": self.streaming,
            "customizationsSupported": [],
            "inferenceTypesSupported": list(self.inference_types),
            "modelLifecycle": {"status": "ACTIVE"},
        }


DEFAULT_MODELS: tuple[FoundationModel, ...] = (
    FoundationModel(
        "anthropic.claude-3-5-haiku-20241022-v1:0", inference_types=("INFERENCE_PROFILE",)
    ),
    FoundationModel("anthropic.claude-sonnet-4-5-20250929-v1:0"),
    FoundationModel("amazon.nova-lite-v1:0", provider="Amazon"),
    FoundationModel("mistral.mistral-large-2402-v1:0", provider="Mistral AI"),
    FoundationModel(
        "amazon.titan-embed-text-v2:0", provider="Amazon", output_modalities=("EMBEDDING",)
    ),
    FoundationModel("amazon.nova-canvas-v1:0", provider="Amazon", output_modalities=("IMAGE",)),
    FoundationModel("cohere.command-r-v1:0", provider="Cohere", streaming=False),
)
# (profile id, the foundation models it routes to)
DEFAULT_PROFILES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("us.anthropic.claude-3-5-haiku-20241022-v1:0", ("anthropic.claude-3-5-haiku-20241022-v1:0",)),
    (
        "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
        ("anthropic.claude-sonnet-4-5-20250929-v1:0",),
    ),
    ("us.amazon.nova-canvas-v1:0", ("amazon.nova-canvas-v1:0",)),
)


def encode_event(headers: Mapping[str, str], payload: bytes) -> bytes:
    """One binary event-stream message: the prelude (total length and headers length, u32
    big-endian, and their CRC32), string headers, the payload, and the message's CRC32."""
    encoded = b"".join(
        struct.pack(">B", len(name.encode()))
        + name.encode()
        + b"\x07"  # 7: string
        + struct.pack(">H", len(value.encode()))
        + value.encode()
        for name, value in headers.items()
    )
    prelude = struct.pack(">II", 12 + len(encoded) + len(payload) + 4, len(encoded))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded + payload
    return message + struct.pack(">I", zlib.crc32(message))


def event(event_type: str, body: dict[str, Any]) -> bytes:
    """An event frame, padded with `p` as Bedrock pads its events."""
    payload = json.dumps({**body, "p": "abcdefghijklmnopqrstuvwxyzABCDEF"[: 1 + len(event_type)]})
    headers = {":event-type": event_type, ":content-type": _JSON, ":message-type": "event"}
    return encode_event(headers, payload.encode())


def exception_frame(exception_type: str, message: str) -> bytes:
    """An exception event (``internalServerException``, ``throttlingException``, …)."""
    headers = {
        ":exception-type": exception_type,
        ":content-type": _JSON,
        ":message-type": "exception",
    }
    return encode_event(headers, json.dumps({"message": message}).encode())


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the stand-in received it."""

    method: str
    path: str
    """Percent-decoded (``/model/us.anthropic…-v1:0/converse``)."""
    query: dict[str, str]
    headers: dict[str, str]
    """Header names in lower case."""
    json: Any
    route: str
    """``"converse"``, ``"invoke"``, ``"models"``, ``"profiles"`` or ``"other"``."""
    at: float

    @property
    def streaming(self) -> bool:
        """True for ConverseStream."""
        return self.path.endswith("/converse-stream")

    @property
    def model_id(self) -> str:
        """The modelId of a Converse call."""
        return self.path.removeprefix("/model/").rsplit("/", 1)[0]


@dataclass
class _Script:
    kind: str
    route: str
    times: int | None
    text: str = ""
    tool_input: Any = None
    tool_name: str | None = None
    stop_reason: str = "end_turn"
    code: str = ""
    message: str = ""
    status: int | None = None
    after_deltas: int = 0
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


class BedrockStandIn(ThreadedApp):
    """A scriptable Bedrock on a free loopback port.

    Args:
        models: ListFoundationModels' models (default ``DEFAULT_MODELS``; its filters are
            applied as Bedrock applies them).
        profiles: system-defined inference profiles: ``(id, model ids)``.
        region: the region the ARNs name.
        credentials: access key id → secret key accepted in SigV4 signatures.
        api_keys: Bedrock API keys accepted as ``Authorization: Bearer``.
        profile_page_size: ListInferenceProfiles' page size (``nextToken`` beyond it).
    """

    def __init__(
        self,
        *,
        models: Sequence[FoundationModel] = DEFAULT_MODELS,
        profiles: Sequence[tuple[str, Sequence[str]]] = DEFAULT_PROFILES,
        region: str = "us-east-1",
        credentials: Mapping[str, str] | None = None,
        api_keys: Sequence[str] = (API_KEY,),
        profile_page_size: int = 2,
    ) -> None:
        super().__init__()
        self._initial = (list(models), [(pid, tuple(ids)) for pid, ids in profiles])
        self.models, self.profiles = list(self._initial[0]), list(self._initial[1])
        self.region = region
        self.credentials = dict(credentials or {ACCESS_KEY: SECRET_KEY})
        self.api_keys = set(api_keys)
        self.profile_page_size = profile_page_size
        self._lock = threading.Lock()
        self._scripts: deque[_Script] = deque()
        self._records: list[RecordedRequest] = []
        self._disconnects = 0

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: the endpoint URL of both services."""
        return f"http://127.0.0.1:{self.port}"

    def build_app(self) -> web.Application:
        """Both services' routes (runtime and control plane), behind the signature check."""
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post("/model/{model_id}/converse", self._converse)
        app.router.add_post("/model/{model_id}/converse-stream", self._converse)
        app.router.add_post("/model/{model_id}/invoke", self._invoke)
        app.router.add_get("/foundation-models", self._foundation_models)
        app.router.add_get("/inference-profiles", self._inference_profiles)
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        return app

    # ── scripting ───────────────────────────────────────────────────────────────────

    def _push(self, script: _Script) -> None:
        with self._lock:
            self._scripts.append(script)

    def reply(
        self, text: str, *, stop_reason: str = "end_turn", times: int | None = 1, delay: float = 0.0
    ) -> None:
        """Answer a Converse call (streamed or not) with this text."""
        self._push(
            _Script("reply", "converse", times, text=text, stop_reason=stop_reason, delay=delay)
        )

    def reply_tool(
        self, tool_input: Any, *, times: int | None = 1, name: str | None = None
    ) -> None:
        """Answer with a toolUse block of the forced tool (or of the tool `name`, valid or
        not) whose input is this value."""
        self._push(
            _Script(
                "tool",
                "converse",
                times,
                tool_input=tool_input,
                tool_name=name,
                stop_reason="tool_use",
            )
        )

    def fail(
        self,
        code: str,
        message: str | None = None,
        *,
        status: int | None = None,
        route: Route = "converse",
        times: int | None = 1,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer with an AWS JSON error (status from ``ERROR_STATUS`` unless given)."""
        self._push(
            _Script(
                "fail",
                route,
                times,
                code=code,
                message=message or f"stand-in {code}",
                status=status,
                headers=dict(headers or {}),
            )
        )

    def exception_event(
        self, exception_type: str, message: str = "", *, after_deltas: int = 2
    ) -> None:
        """Stream this many text deltas, then an exception event (e.g. ``throttlingException``)."""
        self._push(
            _Script(
                "exception",
                "converse",
                1,
                code=exception_type,
                message=message or f"stand-in {exception_type}",
                after_deltas=after_deltas,
            )
        )

    def drop(self, *, times: int | None = 1) -> None:
        """Close a Converse or ConverseStream call's connection before any reply, as a
        server closing an idle keep-alive connection while the request was on its way."""
        self._push(_Script("drop", "converse", times))

    def cut(self, after_deltas: int = 2, *, times: int | None = 1) -> None:
        """Stream this many deltas, then abort the connection (a Converse call: abort
        before any reply)."""
        self._push(_Script("cut", "converse", times, after_deltas=after_deltas))

    def corrupt(self, after_deltas: int = 1) -> None:
        """Stream this many deltas, then a frame whose CRC is wrong."""
        self._push(_Script("corrupt", "converse", 1, after_deltas=after_deltas))

    def stall(self, seconds: float, *, after_deltas: int = 0) -> None:
        """Stream this many deltas (a Converse call: nothing), then wait ``seconds``
        before going on: a client's read timeout fires first."""
        self._push(_Script("stall", "converse", 1, after_deltas=after_deltas, delay=seconds))

    def _take(self, route: str) -> _Script | None:
        with self._lock:
            for script in self._scripts:
                if script.route in (route, "any"):
                    if script.times is not None:
                        script.times -= 1
                        if script.times == 0:
                            self._scripts.remove(script)
                    return script
        return None

    # ── observing ───────────────────────────────────────────────────────────────────

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, in arrival order."""
        with self._lock:
            return list(self._records)

    @property
    def invoke_requests(self) -> list[RecordedRequest]:
        """The InvokeModel calls (embeddings)."""
        return [r for r in self.requests if r.route == "invoke"]

    @property
    def converse_requests(self) -> list[RecordedRequest]:
        """The Converse and ConverseStream calls."""
        return [r for r in self.requests if r.route == "converse"]

    def reset(self) -> None:
        """Forget scripts, records and disconnects; restore the models and profiles."""
        with self._lock:
            self.models, self.profiles = list(self._initial[0]), list(self._initial[1])
            self._scripts.clear()
            self._records.clear()
            self._disconnects = 0

    async def wait_for_disconnect(self, seconds: float = 1.0) -> bool:
        """Wait (without blocking the caller's loop) until a client hung up mid-response."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with self._lock:
                if self._disconnects:
                    return True
            await asyncio.sleep(0.005)
        return False

    # ── the request pipeline ────────────────────────────────────────────────────────

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        raw = await request.read()
        route = _route_of(request.path)
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            json=json.loads(raw) if raw else None,
            route=route,
            at=time.monotonic(),
        )
        with self._lock:
            self._records.append(record)
        denied = self._check_auth(request, raw)
        if denied is not None:
            return _error(denied, _AUTH_MESSAGES[denied])
        try:
            return await handler(request)
        except asyncio.CancelledError:
            with self._lock:
                self._disconnects += 1
            raise

    def _check_auth(self, request: web.Request, body: bytes) -> str | None:
        """None when the request is signed with known credentials, else the error code."""
        from botocore.auth import SigV4Auth  # type: ignore[import-untyped]
        from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
        from botocore.credentials import Credentials  # type: ignore[import-untyped]

        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            return (
                None
                if header.removeprefix("Bearer ") in self.api_keys
                else "UnrecognizedClientException"
            )
        match = _SIGV4.fullmatch(header)
        if match is None:
            return "MissingAuthenticationTokenException"
        secret = self.credentials.get(match["key"])
        if secret is None:
            return "UnrecognizedClientException"
        signed = match["signed"].split(";")
        unsigned = AWSRequest(
            method=request.method,
            url=f"http://{request.host}{request.raw_path}",
            data=body,
            headers={name: request.headers.get(name, "") for name in signed},
        )
        unsigned.context["timestamp"] = request.headers.get("X-Amz-Date", "")
        signer = SigV4Auth(Credentials(match["key"], secret), match["service"], match["region"])
        expected = signer.signature(
            signer.string_to_sign(unsigned, signer.canonical_request(unsigned)), unsigned
        )
        return (
            None
            if hmac.compare_digest(expected, match["signature"])
            else "InvalidSignatureException"
        )

    # ── runtime ─────────────────────────────────────────────────────────────────────

    async def _converse(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        streaming = request.path.endswith("/converse-stream")
        script = self._take("converse")
        if script is not None and script.kind == "drop":
            _abort(request)
            return web.Response()
        if script is not None and script.kind == "fail":
            return _error(script.code, script.message, script.status, script.headers)
        if script is not None and script.delay and script.kind != "stall":
            await asyncio.sleep(script.delay)
        if script is None and (refusal := _invalid_conversation(body)) is not None:
            return _error("ValidationException", refusal)
        reply = _Reply.of(body, script)
        if not streaming:
            if script is not None and script.kind == "cut":
                _abort(request)
                return web.Response()
            if script is not None and script.kind == "stall":
                await asyncio.sleep(script.delay)
            return web.json_response(reply.converse())
        return await self._stream(request, reply, script)

    async def _invoke(self, request: web.Request) -> web.StreamResponse:
        """InvokeModel for Titan and Cohere embedding models (others: ValidationException)."""
        body = await request.json()
        model_id = request.match_info["model_id"]
        script = self._take("invoke")
        if script is not None and script.kind == "fail":
            return _error(script.code, script.message, script.status, script.headers)
        if "titan-embed" in model_id:
            return _titan_embedding(model_id, body)
        if "cohere.embed" in model_id:
            return _cohere_embeddings(body)
        return _error("ValidationException", "The provided model identifier is invalid.")

    async def _stream(
        self, request: web.Request, reply: _Reply, script: _Script | None
    ) -> web.StreamResponse:
        frames = reply.events()
        resp = web.StreamResponse(headers={"Content-Type": _EVENTSTREAM})
        await resp.prepare(request)
        if script is None or script.kind in ("reply", "tool"):
            await resp.write(b"".join(frames))
            await resp.write_eof()
            return resp
        prefix = frames[: 1 + reply.block_start + script.after_deltas]
        await resp.write(b"".join(prefix))
        if script.kind == "cut":
            _abort(request)
            return resp
        if script.kind == "exception":
            await resp.write(exception_frame(script.code, script.message))
        elif script.kind == "corrupt":
            broken = bytearray(frames[len(prefix)])
            broken[-1] ^= 0xFF
            await resp.write(bytes(broken))
        elif script.kind == "stall":
            await asyncio.sleep(script.delay)
            await resp.write(b"".join(frames[len(prefix) :]))
        await resp.write_eof()
        return resp

    # ── control plane ───────────────────────────────────────────────────────────────

    async def _foundation_models(self, request: web.Request) -> web.StreamResponse:
        script = self._take("models")
        if script is not None and script.kind == "fail":
            return _error(script.code, script.message, script.status)
        modality = request.query.get("byOutputModality")
        summaries = [
            m.summary(self.region)
            for m in self.models
            if modality is None or modality in m.output_modalities
        ]
        return web.json_response({"modelSummaries": summaries})

    async def _inference_profiles(self, request: web.Request) -> web.StreamResponse:
        script = self._take("profiles")
        if script is not None and script.kind == "fail":
            return _error(script.code, script.message, script.status)
        start = int(request.query.get("nextToken", "0"))
        size = min(self.profile_page_size, int(request.query.get("maxResults", "1000")))
        page = self.profiles[start : start + size]
        summaries = [
            {
                "inferenceProfileName": profile_id,
                "inferenceProfileArn": (
                    f"arn:aws:bedrock:{self.region}:123456789012:inference-profile/{profile_id}"
                ),
                "inferenceProfileId": profile_id,
                "models": [
                    {"modelArn": f"arn:aws:bedrock:{self.region}::foundation-model/{model_id}"}
                    for model_id in model_ids
                ],
                "status": "ACTIVE",
                "type": "SYSTEM_DEFINED",
            }
            for profile_id, model_ids in page
        ]
        reply: dict[str, Any] = {"inferenceProfileSummaries": summaries}
        if start + size < len(self.profiles):
            reply["nextToken"] = str(start + size)
        return web.json_response(reply)

    async def _unknown(self, request: web.Request) -> web.StreamResponse:
        return _error("UnknownOperationException", "Unknown operation", 404)


_AUTH_MESSAGES = {
    "UnrecognizedClientException": "The security token included in the request is invalid.",
    "InvalidSignatureException": (
        "The request signature we calculated does not match the signature you provided. "
        "Check your AWS Secret Access Key and signing method."
    ),
    "MissingAuthenticationTokenException": "Missing Authentication Token",
}


@dataclass
class _Reply:
    """What the model answers: text, or the forced tool's input."""

    text: str
    tool: tuple[str, Any] | None
    stop_reason: str
    input_tokens: int
    tool_use_id: str = "tooluse_standin"

    @property
    def block_start(self) -> int:
        """1 when the content block opens with a contentBlockStart event (tool use)."""
        return 1 if self.tool is not None else 0

    @classmethod
    def of(cls, body: dict[str, Any], script: _Script | None) -> _Reply:
        prompt = " ".join(
            block.get("text", "")
            for message in body.get("messages", [])
            for block in message.get("content", [])
        )
        input_tokens = len(split_tokens(prompt))
        forced = body.get("toolConfig", {}).get("toolChoice", {}).get("tool", {}).get("name")
        if script is not None and script.kind == "reply":
            return cls(script.text, None, script.stop_reason, input_tokens)
        result = _last_tool_result(body)
        if script is None and result is not None:
            return cls(tool_result_text(result), None, "end_turn", input_tokens)
        if script is None and not forced and "toolConfig" in body:
            config = body["toolConfig"]
            tools = [
                (t["toolSpec"]["name"], t["toolSpec"]["inputSchema"]["json"])
                for t in config["tools"]
            ]
            choice = config.get("toolChoice", {"auto": {}})
            planned = plan_tool_call(tools, "required" if "any" in choice else "auto", False)
            if planned is not None:
                call = (planned.name, planned.arguments)
                use_id = planned.id.replace("call_", "tooluse_")
                return cls("", call, "tool_use", input_tokens, use_id)
        if (script is not None and script.kind == "tool") or (script is None and forced):
            tools = {t["toolSpec"]["name"]: t["toolSpec"] for t in body["toolConfig"]["tools"]}
            value = (
                script.tool_input
                if script is not None and script.kind == "tool"
                else example_for_schema(tools[forced]["inputSchema"]["json"])
            )
            name = script.tool_name if script is not None and script.tool_name else None
            return cls("", (name or forced or "tool", value), "tool_use", input_tokens)
        text_format = body.get("outputConfig", {}).get("textFormat")
        if text_format is not None:
            schema = json.loads(text_format["structure"]["jsonSchema"]["schema"])
            return cls(json.dumps(example_for_schema(schema)), None, "end_turn", input_tokens)
        last = body.get("messages", [{}])[-1].get("content", [{}])[-1].get("text", "")
        text, stop_reason = f"Echo: {last}", "end_turn"
        max_tokens = body.get("inferenceConfig", {}).get("maxTokens")
        tokens = split_tokens(text)
        if max_tokens is not None and len(tokens) > max_tokens:
            text, stop_reason = "".join(tokens[:max_tokens]), "max_tokens"
        return cls(text, None, stop_reason, input_tokens)

    def _output_tokens(self) -> int:
        return len(split_tokens(self.text or json.dumps(self.tool[1] if self.tool else "")))

    def _usage(self) -> dict[str, int]:
        output = self._output_tokens()
        return {
            "inputTokens": self.input_tokens,
            "outputTokens": output,
            "totalTokens": self.input_tokens + output,
        }

    def converse(self) -> dict[str, Any]:
        """The Converse reply."""
        if self.tool is not None:
            name, value = self.tool
            block: dict[str, Any] = {
                "toolUse": {"toolUseId": self.tool_use_id, "name": name, "input": value}
            }
        else:
            block = {"text": self.text}
        return {
            "output": {"message": {"role": "assistant", "content": [block]}},
            "stopReason": self.stop_reason,
            "usage": self._usage(),
            "metrics": {"latencyMs": 1},
        }

    def events(self) -> list[bytes]:
        """ConverseStream's frames: start, [block start], deltas, block stop, stop, metadata."""
        frames = [event("messageStart", {"role": "assistant"})]
        if self.tool is not None:
            name, value = self.tool
            start = {"toolUse": {"toolUseId": self.tool_use_id, "name": name}}
            frames.append(event("contentBlockStart", {"start": start, "contentBlockIndex": 0}))
            text = json.dumps(value)
            pieces = [text[i : i + 8] for i in range(0, len(text), 8)]
            deltas: list[dict[str, Any]] = [{"toolUse": {"input": piece}} for piece in pieces]
        else:
            deltas = [{"text": token} for token in split_tokens(self.text)]
        frames += [event("contentBlockDelta", {"delta": d, "contentBlockIndex": 0}) for d in deltas]
        frames.append(event("contentBlockStop", {"contentBlockIndex": 0}))
        frames.append(event("messageStop", {"stopReason": self.stop_reason}))
        frames.append(event("metadata", {"usage": self._usage(), "metrics": {"latencyMs": 1}}))
        return frames


def _last_tool_result(body: dict[str, Any]) -> str | None:
    """The text of the last message's toolResult block, when it ends with one."""
    messages = body.get("messages") or [{}]
    for block in reversed(messages[-1].get("content", [])):
        if "toolResult" in block:
            parts = block["toolResult"].get("content", [])
            return "".join(p.get("text", "") or json.dumps(p.get("json")) for p in parts)
    return None


def _invalid_conversation(body: dict[str, Any]) -> str | None:
    """What Bedrock's ValidationException says about tool blocks it cannot take: roles not
    alternating, tool blocks without a toolConfig, a toolResult answering no toolUse of the
    turn before it."""
    messages = body.get("messages") or []
    used: set[str] = set()
    for index, message in enumerate(messages):
        if index and message.get("role") == messages[index - 1].get("role"):
            return "A conversation must alternate between user and assistant roles."
        blocks = message.get("content", [])
        tool_blocks = [b for b in blocks if "toolUse" in b or "toolResult" in b]
        if tool_blocks and "toolConfig" not in body:
            return (
                "The toolConfig field must be defined when using toolUse and toolResult "
                "content blocks."
            )
        for block in blocks:
            if "toolResult" in block and block["toolResult"].get("toolUseId") not in used:
                return (
                    "The number of toolResult blocks at messages."
                    f"{index}.content exceeds the number of toolUse blocks of previous turn."
                )
        used = {b["toolUse"]["toolUseId"] for b in blocks if "toolUse" in b}
    return None


def _titan_embedding(model_id: str, body: Any) -> web.Response:
    text = body.get("inputText") if isinstance(body, dict) else None
    extra = sorted(set(body) - {"inputText", "dimensions", "normalize"}) if text else []
    if not isinstance(text, str) or not text or extra:
        return _error(
            "ValidationException",
            f"Malformed input request: extraneous key [{extra[0]}] is not permitted"
            if extra
            else "Malformed input request: expected minLength: 1, please reformat your input",
        )
    size = body.get("dimensions", embedding.DIMENSIONS)
    if "dimensions" in body and ("v2" not in model_id or size not in (256, 512, 1024)):
        return _error("ValidationException", "Malformed input request: dimensions")
    tokens = embedding.tokens_in(text)
    return web.json_response(
        {"embedding": embedding.vector_for(text, size), "inputTextTokenCount": tokens},
        headers={"X-Amzn-Bedrock-Input-Token-Count": str(tokens)},
    )


def _cohere_embeddings(body: Any) -> web.Response:
    texts = body.get("texts") if isinstance(body, dict) else None
    allowed = {"texts", "input_type", "truncate", "embedding_types", "images"}
    if (
        not isinstance(texts, list)
        or not 0 < len(texts) <= 96
        or not all(isinstance(text, str) for text in texts)
        or body.get("input_type")
        not in ("search_document", "search_query", "classification", "clustering")
        or set(body) - allowed
    ):
        return _error("ValidationException", "Malformed input request, please reformat your input")
    tokens = sum(embedding.tokens_in(text) for text in texts)
    return web.json_response(
        {
            "embeddings": [embedding.vector_for(text) for text in texts],
            "id": "5bd4e2a6-1c55-4ab0-a8c0-3f3c4a2c1d9e",
            "response_type": "embeddings_floats",
            "texts": texts,
        },
        headers={"X-Amzn-Bedrock-Input-Token-Count": str(tokens)},
    )


def _route_of(path: str) -> str:
    if path.endswith("/invoke"):
        return "invoke"
    if path.startswith("/model/"):
        return "converse"
    return {"/foundation-models": "models", "/inference-profiles": "profiles"}.get(path, "other")


def _error(
    code: str,
    message: str,
    status: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """An AWS JSON error: its type in ``x-amzn-ErrorType`` (with the namespace suffix AWS
    adds), ``{"message": ...}`` as the body."""
    return web.json_response(
        {"message": message},
        status=status or ERROR_STATUS.get(code, 400),
        headers={
            "x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/com.amazon.bedrock/",
            **(headers or {}),
        },
    )


def _abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()
