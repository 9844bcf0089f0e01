"""Who sent an API request, as the serving layer needs it: the user (owner of the jobs they
submit) and whether their connection is still open (a job nobody waits for is stopped)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable, Optional


async def _never_gone() -> bool:
    return False


@dataclass(frozen=True)
class Caller:
    user: Optional[str] = None  # the authenticated user; None when the API has no auth (sees every job)
    is_disconnected: Callable[[], Awaitable[bool]] = _never_gone  # Starlette's Request.is_disconnected


LOCAL = Caller()
