"""Ideas tried on our structured-output ladder, as variants the accuracy benchmark can run.

Each variant is a context manager that changes `app.services.llm.structured` for the
duration of one run of ours (``--variant NAME`` in `benchmarks.structured_accuracy`), so an
idea can be measured beside the shipped ladder in the same run before it is kept or dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

VARIANTS: dict[str, Callable[[], AbstractContextManager[None]]] = {}
