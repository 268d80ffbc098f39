"""Values that belong to one event loop: pooled clients, semaphores, locks.

Connections, semaphores and locks are bound to the loop that created them, and a process
may run several loops over its life (tests, the CLI), so each loop gets its own.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerLoop(Generic[T]):
    """One value per running event loop, made by `make` on first use; gone with the loop."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._values: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = (
            weakref.WeakKeyDictionary()
        )

    def get(self) -> T:
        """The running loop's value."""
        loop = asyncio.get_running_loop()
        value = self._values.get(loop)
        if value is None:  # not setdefault: that builds a weak reference on every call
            value = self._values[loop] = self._make()
        return value

    def pop(self) -> T | None:
        """Forget the running loop's value and return it (None if it had none)."""
        return self._values.pop(asyncio.get_running_loop(), None)
