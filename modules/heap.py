"""Hand freed heap memory back to the operating system.

glibc keeps freed blocks in its arenas (one per thread that allocated) instead of returning
them, so after decoding a large image the process stays at its peak size although nothing holds
the pixels any more. `malloc_trim(0)` releases the free pages of every arena. Elsewhere (macOS,
musl, Windows) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import sys

log = logging.getLogger(__name__)

# Input images at least this big (pixels, all of one request together) are worth a trim afterwards;
# a trim walks the heap, so small requests skip it.
TRIM_AFTER_PIXELS = 2048 * 2048


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_free_memory() -> bool:
    """Return freed heap pages to the OS; True when the C library did it."""
    trim = _malloc_trim()
    if trim is None:
        return False
    try:
        trim(0)
    except Exception:  # best effort, never an error for the request
        log.debug("malloc_trim failed", exc_info=True)
        return False
    return True
