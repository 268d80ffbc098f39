"""Settle the heap once start-up is done: what was loaded stays, what was freed goes back."""

from __future__ import annotations

import ctypes
import gc


def settle_after_startup() -> None:
    """Collect, freeze what survives, and hand freed heap pages back to the OS.

    Everything loaded so far (framework, SDK types, models) lives as long as the process;
    frozen, the cyclic GC stops rescanning it: full collections under load otherwise
    stalled every request in flight for ~200 ms on the benchmark machine. Importing and
    building the app frees a few MiB that glibc keeps mapped; `malloc_trim` returns them
    (about 4 MiB of an idle worker's RSS). Elsewhere than glibc it is skipped.
    """
    gc.collect()
    gc.freeze()
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the C library the interpreter runs on
    except (OSError, AttributeError):  # musl, macOS: no malloc_trim
        return
    trim(0)
