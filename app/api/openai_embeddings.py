"""`POST /v1/embeddings` on the OpenAI-compatible facade.

`model` follows the facade's one rule for names (`default` or omitted: the active provider's
embedding model; `ollama/nomic-embed-text`: that provider's model), but the configured model
is the provider's embedding model (`<PROVIDER>_EMBEDDING_MODEL`), never its chat model. There
is no fallback chain: vectors of different models do not compare. `encoding_format: base64`
(what the `openai` SDK asks for by default) is each vector as little-endian float32 bytes.
"""

from __future__ import annotations

import base64
import sys
from array import array
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import get_current_user
from app.api.openai_compat import PREFIX, openai_error, provider_and_model
from app.models import ModelName
from app.services.llm import embedding_service
from app.services.llm.embeddings import MAX_EMBEDDING_DIMENSIONS, MAX_EMBEDDING_INPUTS

router = APIRouter(
    prefix=PREFIX, tags=["openai-compatible"], dependencies=[Depends(get_current_user)]
)


class EmbeddingsRequest(BaseModel):
    """OpenAI's embeddings request; other fields (`user`) are ignored."""

    model_config = ConfigDict(extra="allow")

    model: ModelName | None = None
    # Checked in the handler: token-id arrays get a message of their own.
    input: str | list[Any] = Field(max_length=MAX_EMBEDDING_INPUTS)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1, le=MAX_EMBEDDING_DIMENSIONS)


@router.post("/embeddings", response_model=None)
async def create_embeddings(body: EmbeddingsRequest) -> Response:
    """Vectors for `input` (a text or a list of texts) from the chosen provider's embedding
    model, in OpenAI's response shape."""
    texts = body.input
    if isinstance(texts, list) and any(not isinstance(text, str) for text in texts):
        return openai_error(
            400,
            "input: only text can be embedded here (a string or a list of strings); token-id "
            "arrays are not supported by this gateway",
            "invalid_request_error",
            param="input",
        )
    provider, model = provider_and_model(body.model)
    chosen = await embedding_service(provider, model)
    result = await chosen.service.embed(texts, dimensions=body.dimensions)
    encode = _base64 if body.encoding_format == "base64" else list
    reply = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": index, "embedding": encode(vector)}
            for index, vector in enumerate(result.vectors)
        ],
        "model": f"{result.provider}/{result.model}",
        "usage": {
            "prompt_tokens": result.usage.prompt_tokens,
            "total_tokens": result.usage.prompt_tokens,
        },
    }
    return Response(orjson.dumps(reply), media_type="application/json")


def _base64(vector: list[float]) -> str:
    """The vector as OpenAI sends it with `encoding_format: base64`: float32, little-endian."""
    packed = array("f", vector)
    if sys.byteorder == "big":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode()
