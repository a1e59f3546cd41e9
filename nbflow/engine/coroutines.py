"""Running ``async def`` steps: each call gets an event loop of its own.

A step's coroutine is run to completion with :func:`asyncio.run`, in the thread that runs
the step, so steps on the thread executor (one loop per worker thread) or in worker
processes await concurrently. In a thread whose event loop already runs (a notebook's
kernel runs its cells inside one) ``asyncio.run`` is refused, so the coroutine runs on a
thread of its own, and the caller waits for it. A step's ``timeout`` cancels the
coroutine (unlike a plain function's, which can only be abandoned).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from nbflow.errors import StepTimeout

__all__ = ["is_async", "run_awaitable"]


def is_async(func: Callable[..., Any]) -> bool:
    """Whether calling ``func`` gives a coroutine to await (an ``async def`` function, a
    partial of one, or an object whose ``__call__`` is one)."""
    if inspect.iscoroutinefunction(func):
        return True
    if inspect.isfunction(func) or inspect.ismethod(func):
        return False
    call = next((vars(c)["__call__"] for c in type(func).__mro__ if "__call__" in vars(c)), None)
    return call is not None and inspect.iscoroutinefunction(call)


def run_awaitable(name: str, make: Callable[[], Awaitable[Any]], timeout: float | None) -> Any:
    """Await what ``make()`` returns, on an event loop of its own; its result.

    ``make`` is called inside that loop (a coroutine is made where it is awaited).
    Raises StepTimeout once ``timeout`` seconds have passed, after cancelling it.
    """

    async def main() -> Any:
        if timeout is None:
            return await make()
        try:
            return await asyncio.wait_for(make(), timeout)
        except TimeoutError:
            raise StepTimeout(
                f"step {name!r} did not finish within its timeout of {timeout:g} s"
            ) from None

    try:
        asyncio.get_running_loop()
    except RuntimeError:  # no loop runs here: the usual case
        return asyncio.run(main())
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(main())
        except BaseException as exc:
            box["error"] = exc

    # (In a copy of this context, so the files the coroutine opens count for the step.)
    context = contextvars.copy_context()
    thread = threading.Thread(
        target=context.run, args=(target,), name=f"nbflow-async-{name}", daemon=True
    )
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")
