"""Micro-batching: concurrent requests share one forward pass.

Each request puts its item on an asyncio queue and awaits a future. One loop
takes everything queued (up to ``max_batch``), optionally waits ``max_wait_ms``
for more, and calls ``fn(items)`` once in a worker thread, so the event loop
keeps accepting requests while the batch runs. While one batch runs the next
one fills up, so batches grow with the load and a lone request never waits
for company it will not get (with the default ``max_wait_ms=0``).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any


class MicroBatcher:
    """Calls ``fn(list_of_items) -> list_of_results`` (same length, same order) on batches of submitted items.

    A result that is an exception instance is raised to that item's caller only.

    Example:
        >>> batcher = MicroBatcher(lambda xs: [x * 2 for x in xs])
        >>> await batcher.start(); await batcher.submit(21)
        42
    """

    def __init__(self, fn: Callable[[list[Any]], Sequence[Any]], max_batch: int = 64, max_wait_ms: float = 0.0,
                 on_batch: Callable[[int], None] | None = None):
        if max_batch < 1:
            raise ValueError(f"max_batch must be a positive integer; received max_batch={max_batch}")
        if not (math.isfinite(max_wait_ms) and max_wait_ms >= 0):  # an infinite wait would hang every request
            raise ValueError(f"max_wait_ms must be a finite number >= 0; received max_wait_ms={max_wait_ms}")
        self.fn, self.max_batch, self.max_wait = fn, max_batch, max_wait_ms / 1000.0
        self.on_batch = on_batch  # called with each batch's size (for metrics)
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._progress: float | None = None  # time.monotonic() of the running batch's start or last beat()

    @property
    def alive(self) -> bool:
        """Whether the loop that runs batches is running."""
        return self._task is not None and not self._task.done()

    @property
    def queued(self) -> int:
        """Items waiting for a batch."""
        return self._queue.qsize() if self._queue is not None else 0

    def beat(self) -> None:
        """Called by ``fn`` (from its thread) as it finishes each item: the batch is making progress."""
        if self._progress is not None:
            self._progress = time.monotonic()

    def stalled_seconds(self) -> float:
        """Seconds since the running batch began or last called :meth:`beat` (0 when no batch runs)."""
        since = self._progress
        return 0.0 if since is None else time.monotonic() - since

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="fittingroom-batch")
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while self._queue is not None and not self._queue.empty():  # nobody will answer these now
            _, future = self._queue.get_nowait()
            if not future.done():
                future.set_exception(RuntimeError("the server is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self._task = self._queue = self._executor = None

    async def submit(self, item: Any) -> Any:
        """The result of ``fn`` for ``item``, computed in a batch with whatever else is waiting."""
        if self._queue is None:
            raise RuntimeError("MicroBatcher.submit before start()")
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, future))
        return await future

    def _drain(self, batch: list) -> None:
        while len(batch) < self.max_batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            self._drain(batch)
            if len(batch) < self.max_batch and self.max_wait > 0:
                await asyncio.sleep(self.max_wait)  # give concurrent requests a moment to join
                self._drain(batch)
            batch = [(item, f) for item, f in batch if not f.done()]  # callers that gave up (disconnected)
            if not batch:
                continue
            if self.on_batch:
                self.on_batch(len(batch))
            self._progress = time.monotonic()
            try:
                results = await loop.run_in_executor(self._executor, self.fn, [item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"batch function returned {len(results)} results for {len(batch)} items")
            except Exception as exc:  # a failing batch fails its callers, not the loop
                results = [exc] * len(batch)
            finally:
                self._progress = None
            for (_, future), result in zip(batch, results):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
