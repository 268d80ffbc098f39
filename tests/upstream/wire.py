"""What LM Studio and OpenAI put on the wire: exact error strings and body shapes.

Every LM Studio string below was copied from a real server's answer quoted in a public
source, named next to it. Where LM Studio changed its wording between releases, both
versions are kept and ``StandInServer(lmstudio_version=...)`` picks one:

* ``"0.3"`` -- LM Studio 0.3.x (the default): "No models loaded" is HTTP 404 with backticks.
* ``"0.4"`` -- LM Studio 0.4.x: the same error is HTTP 400, single quotes, ``code: null``;
  an unknown model is ``Invalid model identifier ...`` (HTTP 400).

Note that LM Studio is not consistent about the error shape: chat-completion errors about
the model come in OpenAI's object shape ``{"error": {"message", "type", "param", "code"}}``,
while request validation errors (``response_format``) and unknown routes use a bare string
``{"error": "<string>"}``. The stand-in reproduces each case as observed.
"""

from __future__ import annotations

from typing import Any, Final, Literal

ErrorStyle = Literal["lmstudio", "openai"]
LMStudioVersion = Literal["0.3", "0.4"]

# ── LM Studio ────────────────────────────────────────────────────────────────

# HTTP 404 on POST /v1/chat/completions with nothing loaded (LM Studio 0.3.x). Sources:
# lmstudio-ai/lms issue #107 (LM Studio 0.3.5: "(404): No models loaded. Please load a model
# in the developer page or use the `lms load` command"), and a full captured body quoted in
# a public project's notes: {"error": {"message": <this>, "type": "invalid_request_error",
# "param": "model", "code": "model_not_found"}}.
LMSTUDIO_NO_MODELS_LOADED: Final = (
    "No models loaded. Please load a model in the developer page or use the `lms load` command."
)
# HTTP 400, same shape with "code": null, LM Studio 0.4.x. Source: lmstudio-ai/lmstudio-bug-tracker
# issue #1730 (LM Studio 0.4.8 server log: "[Server Error] {"error": {"message": <this>,
# "type": "invalid_request_error", "param": "model", "code": null}}").
LMSTUDIO_NO_MODELS_LOADED_V04: Final = (
    "No models loaded. Please load a model in the developer page or use the 'lms load' command."
)

# HTTP 404, {"error": {"message": <this>, "type": "invalid_request_error", "param": "model",
# "code": "model_not_found"}}, LM Studio 0.3.5. Source: letta-ai/letta pull request #1876.
# {models} is the newline-joined list of model identifiers.
LMSTUDIO_MODEL_NOT_FOUND: Final = (
    'Model "{model}" not found. Please specify a valid model.\n\nYour models:\n\n{models}'
)
# HTTP 400, {"error": {"message": <this>, "type": "invalid_request_error", "param": "model",
# "code": "model_not_found"}}, LM Studio 0.4.x. Sources: assafelovic/gpt-researcher issue #1556
# (the full body), continuedev/continue issue #12757 and QwenLM/qwen-code issue #10065 (three
# examples listed). {examples} is ", ".join of up to three model identifiers.
LMSTUDIO_INVALID_MODEL_IDENTIFIER: Final = (
    'Invalid model identifier "{model}". Please specify a valid downloaded model '
    "(e.g., {examples})."
)

# HTTP 400, bare-string body {"error": <this>}, for response_format.type "json_object" (or any
# type other than these two). Source: LoadShine/tada issue #16 (raw body
# {"error":"'response_format.type' must be 'json_schema' or 'text'"}); the wording gained
# "or 'text'" after lmstudio-ai/lmstudio-bug-tracker issue #307 (Jan 2025).
LMSTUDIO_RESPONSE_FORMAT_ERROR: Final = "'response_format.type' must be 'json_schema' or 'text'"

# HTTP 200 (sic), bare-string body, for any path or method LM Studio does not serve. Sources:
# several public projects that measured it, e.g. `GET /models` -> 200
# {"error":"Unexpected endpoint or method. (GET /models)"}; LM Studio's own log line reads
# "Unexpected endpoint or method. (GET /). Returning 200 anyway".
LMSTUDIO_UNEXPECTED_ENDPOINT: Final = "Unexpected endpoint or method. ({method} {path})"

# HTTP 401 when "Require Authentication" is on (LM Studio >= 0.4.0) and no token is sent:
# {"error": {"type": "invalid_request", "code": "invalid_api_key", "message": <this>}}.
# Source: agustif/opencode-lmstudio issue #41 (LM Studio 0.4.18 server log).
LMSTUDIO_TOKEN_REQUIRED: Final = (
    "An LM Studio API token is required to make requests to this server, but none was "
    "provided using the Authorization header using the 'Bearer' scheme (i.e., "
    "'Authorization: Bearer $LM_API_TOKEN'). Learn more at: "
    "https://lmstudio.ai/docs/developer/core/authentication."
)
# Same shape for a token LM Studio does not accept. Source: a public project's verbatim error
# transcript ("Malformed LM Studio API token provided: 22aac52a71... Ensure you are using a
# valid token."). {prefix} is the first ten characters of the token sent.
LMSTUDIO_TOKEN_MALFORMED: Final = (
    "Malformed LM Studio API token provided: {prefix}... Ensure you are using a valid token."
)

# /v1/models entries: {"id", "object": "model", "owned_by": "organization_owner"}, the list as
# {"data": [...], "object": "list"}. Source: Corvidae-Coding-Projects/OpenClaudia issue #1
# quoting a real answer; https://lmstudio.ai/docs/developer/openai-compat/models.
LMSTUDIO_OWNED_BY: Final = "organization_owner"

# ── OpenAI ───────────────────────────────────────────────────────────────────

# api.openai.com answers, as quoted verbatim in many public projects.
OPENAI_MISSING_KEY: Final = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field "
    "(with blank username) if you're accessing the API from your browser and are prompted for "
    "a username and password. You can obtain an API key from "
    "https://platform.openai.com/account/api-keys."
)
OPENAI_INCORRECT_KEY: Final = (
    "Incorrect API key provided: {masked}. You can find your API key at "
    "https://platform.openai.com/account/api-keys."
)
OPENAI_MODEL_NOT_FOUND: Final = (
    "The model `{model}` does not exist or you do not have access to it."
)
OPENAI_INVALID_URL: Final = "Invalid URL ({method} {path})"
OPENAI_SERVER_ERROR: Final = (
    "The server had an error while processing your request. Sorry about that!"
)
OPENAI_BAD_JSON: Final = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON. If you have trouble figuring out how to fix this, please "
    "contact us through our help center at help.openai.com.)"
)
OPENAI_MISSING_MODEL: Final = "you must provide a model parameter"
OPENAI_OWNED_BY: Final = "system"

# ── stand-in's own wording (no real server text to copy) ─────────────────────

STANDIN_BAD_JSON: Final = "Unexpected token in JSON body"
STANDIN_MISSING_MESSAGES: Final = "'messages' field is required"
STANDIN_JSON_SCHEMA_UNSUPPORTED: Final = "'response_format.type' must be 'text'"
STANDIN_FAILURE: Final = "Stand-in scripted failure (HTTP {status})"
STANDIN_NATIVE_MODEL_NOT_FOUND: Final = 'Model "{model}" not found'


# ── body builders ────────────────────────────────────────────────────────────


def openai_error(
    message: str,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """OpenAI's error envelope: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def string_error(message: str) -> dict[str, Any]:
    """LM Studio's bare-string error envelope: ``{"error": "<message>"}``."""
    return {"error": message}


def lmstudio_auth_error(message: str) -> dict[str, Any]:
    """LM Studio's token error (field order as LM Studio sends it)."""
    return {"error": {"type": "invalid_request", "code": "invalid_api_key", "message": message}}


def mask_key(key: str) -> str:
    """Mask a key the way OpenAI quotes it back: ``sk-ab***********wxyz``."""
    if len(key) <= 8:
        return "*" * len(key)
    return f"{key[:3]}{'*' * (len(key) - 7)}{key[-4:]}"


def failure_body(style: ErrorStyle, status: int) -> dict[str, Any]:
    """The default body of a scripted ``fail(status)`` in the given error style."""
    if style == "lmstudio":
        return string_error(STANDIN_FAILURE.format(status=status))
    if status == 429:  # OpenAI's real message goes on to name the model, limit and wait
        return openai_error(
            "Rate limit reached for requests", "requests", None, "rate_limit_exceeded"
        )
    if status >= 500:
        return openai_error(OPENAI_SERVER_ERROR, "server_error")
    return openai_error(STANDIN_FAILURE.format(status=status))


# ── /api/v0/models metadata ──────────────────────────────────────────────────

_ARCHES: Final = (
    ("codellama", "llama"),
    ("llama", "llama"),
    ("mistral", "mistral"),
    ("mixtral", "mixtral"),
    ("qwen2-vl", "qwen2_vl"),
    ("qwen", "qwen2"),
    ("gemma", "gemma3"),
    ("phi", "phi3"),
    ("deepseek", "qwen2"),
    ("granite", "granite"),
    ("nomic", "nomic-bert"),
    ("bge", "bert"),
)


def native_model_entry(model_id: str, loaded: bool) -> dict[str, Any]:
    """One ``GET /api/v0/models`` entry, shaped like LM Studio's documented example.

    Source of the shape: https://lmstudio.ai/docs/developer/rest/endpoints (REST API v0).
    The metadata is derived deterministically from the id: ``embed`` in it means
    ``"embeddings"``, ``-vl``/``vision`` means ``"vlm"``, anything else ``"llm"``.
    """
    lowered = model_id.lower()
    if "embed" in lowered:
        kind, context = "embeddings", 2048
    elif "-vl" in lowered or "vision" in lowered:
        kind, context = "vlm", 32768
    else:
        kind, context = "llm", 131072
    arch = next((a for key, a in _ARCHES if key in lowered), lowered.split("-")[0])
    publisher, _, _ = model_id.rpartition("/")
    return {
        "id": model_id,
        "object": "model",
        "type": kind,
        "publisher": publisher or "lmstudio-community",
        "arch": arch,
        "compatibility_type": "gguf",
        "quantization": "Q4_0" if kind == "embeddings" else "Q4_K_M",
        "state": "loaded" if loaded else "not-loaded",
        "max_context_length": context,
    }
