"""A stand-in LM Studio / OpenAI-compatible upstream for integration tests and benchmarks.

``StandInServer`` serves the real wire protocol on a free loopback port and can be
scripted to misbehave; ``unused_url()`` names a port where nothing listens.
"""

from .completion import split_tokens
from .server import (
    DEFAULT_MODELS,
    RecordedRequest,
    StandInServer,
    unanswered_connect_url,
    unused_url,
)

__all__ = [
    "DEFAULT_MODELS",
    "RecordedRequest",
    "StandInServer",
    "split_tokens",
    "unanswered_connect_url",
    "unused_url",
]
