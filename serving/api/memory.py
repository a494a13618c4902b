"""Giving the memory a large request freed back to the operating system, so the server's size returns to its baseline.

A 30 MB request body becomes hundreds of MB of Python objects while it is validated and scored. Python frees them
when the answer has gone, but glibc's allocator keeps freed memory in its heaps (one per thread that allocated,
up to 8 per core) for reuse, so a worker's resident size only ever grew: 0.7 GB at start, ~1.9 GB after one burst
of forty 30 MB requests, ~3 GB after six. ``malloc_trim(0)`` returns the free pages of every heap; ``leadval
serve`` also caps the heaps at two (``MALLOC_ARENA_MAX``, :func:`serving.cli.serve.server_environment`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache


@cache
def _malloc_trim() -> ctypes._CFuncPtr | None:
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return getattr(libc, "malloc_trim", None)


def give_back() -> None:
    """Return the allocator's free memory to the operating system; call it from a thread (it takes ~10-100 ms and
    releases the interpreter lock while it runs)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
