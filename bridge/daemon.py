"""Blocking calls the event loop may walk away from: run one at a time in a daemon thread.

``asyncio.to_thread`` cannot stop a call in progress, and at exit ``asyncio.run`` waits for every call of
its default executor to return: a database call that takes minutes (or hangs on a lock) holds the
process past its stop timeout. A :class:`DaemonWorker`'s thread is a daemon: cancelling the awaiting task
returns at once, and a call still running when the process exits is cut off with it, which a database
treats as a dropped connection (the transaction in progress rolls back). So only work that is safe to
lose mid-transaction belongs here.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

IDLE_SECONDS = 5.0

_Job = tuple[Callable[[], Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


class DaemonWorker:
    """Runs blocking calls in order in one daemon thread, started by a call and ended after
    ``IDLE_SECONDS`` without one."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._running = False

    async def call(self, work: Callable[[], T]) -> T:
        """``work()`` in the worker's thread; cancelling the caller does not wait for it to return."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            self._jobs.put((work, loop, future))
            if not self._running:
                self._running = True
                threading.Thread(target=self._serve, name=self._name, daemon=True).start()
        return await future

    def _serve(self) -> None:
        while True:
            try:
                work, loop, future = self._jobs.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._lock:  # a call queues its job under the lock: none is left behind
                    if self._jobs.empty():
                        self._running = False
                        return
                continue
            if future.cancelled():  # the caller left before the call began
                continue
            try:
                outcome: tuple[Callable[..., None], Any] = (_set_result, work())
            except BaseException as exc:  # handed to the caller, whatever it is
                outcome = (_set_exception, exc)
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(outcome[0], future, outcome[1])


def _set_result(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
