"""The serving step's executables, one per (rows, query length) bucket: loaded from the store or compiled.

Buckets are prepared in the order given (the runner puts the one-row bucket of each query length first). A
bucket stored by an earlier run of the same code loads without tracing or lowering (``executable_store.py``), on a
small thread pool, several side by side (loading releases the GIL); another is lowered on the preparing thread
(lowering holds the GIL) and compiled on a pool of its own (XLA compiles release it), then stored.

``prepare(background=False)`` returns once every bucket is ready. ``prepare(background=True)`` does the work on a
thread of its own and returns as soon as the first bucket is: the engine serves with what is ready while the others
come (the runner splits a large batch into calls of the largest bucket ready). On a cold start the leading
buckets are compiled twice: at XLA's lowest backend optimization level first (about half the compile time, steps
~30% slower), then optimized; the optimized executable replaces the quick one when it is done and is the one
stored. Background lowerings hold the GIL for up to a few seconds each, so the first steps of a cold background
start are uneven; the numbers a batch sees may differ in the last bits from bucket to bucket.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor, wait

import jax
from tqdm.auto import tqdm

from lamps_jax.executable_store import ExecutableStore

Shape = tuple[int, int]  # (rows, query length)
QUICK_COMPILE = {"xla_backend_optimization_level": 0}


class StepExecutables:
    """``ready`` maps each prepared bucket to its executable (read by the serving thread while it fills)."""

    def __init__(
        self,
        lower: Callable[[Shape], jax.stages.Lowered],
        key_of: Callable[[Shape], str],
        store: ExecutableStore | None,
    ) -> None:
        self._lower, self._key_of, self._store = lower, key_of, store
        self.ready: dict[Shape, jax.stages.Compiled] = {}
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._bar: tqdm | None = None
        self._compiles: list[Future] = []
        self._compile_failed = False
        self._num_shapes = self._num_done = 0

    def prepare(self, shapes: Sequence[Shape], background: bool, progress: bool, quick: int = 0) -> None:
        """Makes every bucket of ``shapes`` ready, in order; with ``background``, returns once the first is, and the
        ``quick`` leading buckets that need compiling are compiled quickly first."""
        self._num_shapes = len(shapes)
        self._bar = tqdm(total=len(shapes), desc="compiling the serving step", unit="shape", disable=not progress)
        if not background:
            self._prepare(shapes, quick=())
            self._bar.close()
            return
        self._thread = threading.Thread(
            target=self._prepare_guarded, args=(shapes, shapes[:quick]), name="step-executables", daemon=False
        )
        self._thread.start()
        with self._changed:
            self._changed.wait_for(lambda: self._error is not None or shapes[0] in self.ready)
        self._raise_error()

    @property
    def complete(self) -> bool:
        """Every bucket has its final executable (loaded, or compiled optimized)."""
        return self._num_done == self._num_shapes

    @property
    def num_done(self) -> tuple[int, int]:
        """(buckets with their final executable, all buckets)."""
        return self._num_done, self._num_shapes

    def wait(self) -> None:
        """Blocks until every bucket is ready (or the preparation failed: its error is raised here)."""
        if self._thread is not None:
            self._thread.join()
        self._raise_error()

    def close(self) -> None:
        """Stops a background preparation: buckets not started are dropped, those compiling finish."""
        self._stop.set()
        for future in list(self._compiles):
            future.cancel()
        if self._thread is not None:
            self._thread.join()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise RuntimeError("preparing the serving step's executables failed") from self._error

    def _prepare_guarded(self, shapes: Sequence[Shape], quick: Sequence[Shape]) -> None:
        try:
            self._prepare(shapes, quick)
        except BaseException as error:  # the waiting thread raises it
            with self._changed:
                self._error = error
                self._changed.notify_all()
        finally:
            self._bar.close()

    def _prepare(self, shapes: Sequence[Shape], quick: Sequence[Shape]) -> None:
        """``quick``: the leading shapes to compile quickly first; the others wait until those are ready, so
        that the first compiles have every core. Stored buckets load on a pool of their own, side by side and in
        order (deserializing releases the GIL), while this thread lowers the others."""
        workers = min(4, os.cpu_count() or 1)
        with (
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="xla-compile") as pool,
            ThreadPoolExecutor(
                max_workers=workers, thread_name_prefix="step-load"
            ) as loading,  # no compile waits on it
        ):
            loads = {}
            if self._store:
                # a background start serves once the first bucket is ready: it loads alone, the rest after it
                first = loading.submit(self._load, shapes[0], self._key_of(shapes[0]))
                if quick:
                    wait([first])
                loads = {shapes[0]: first} | {s: loading.submit(self._load, s, self._key_of(s)) for s in shapes[1:]}
                self._compiles += loads.values()
            for index, shape in enumerate(shapes):
                if index == len(quick) > 0:
                    with self._changed:
                        self._changed.wait_for(
                            lambda: self._compile_failed or self._stop.is_set() or all(s in self.ready for s in quick)
                        )
                if self._stop.is_set() or self._compile_failed:  # a failed compile is raised below
                    break
                try:
                    if shape in loads and loads[shape].result():
                        continue
                except CancelledError:  # by close()
                    break
                lowered = self._lower(shape)
                if self._stop.is_set():
                    break
                key = self._key_of(shape) if self._store else None
                self._compiles.append(pool.submit(self._compile, shape, key, lowered, shape in quick))
        for future in self._compiles:
            with contextlib.suppress(CancelledError):  # dropped by close()
                future.result()

    def _load(self, shape: Shape, key: str) -> bool:
        """Loads ``shape``'s stored executable; False when there is none (or it does not load)."""
        if self._stop.is_set():
            return False
        loaded = self._store.load(key)
        if loaded is not None:
            self._set_ready(shape, loaded, done=True)
        return loaded is not None

    def _compile(self, shape: Shape, key: str | None, lowered: jax.stages.Lowered, quick: bool) -> None:
        try:
            if quick:  # serve with a quickly compiled step until the optimized one is done
                self._set_ready(shape, lowered.compile(compiler_options=QUICK_COMPILE), done=False)
            compiled = lowered.compile()
        except BaseException:
            with self._changed:  # wakes a preparation waiting for this bucket
                self._compile_failed = True
                self._changed.notify_all()
            raise
        if self._store:
            self._store.save(key, compiled)
        self._set_ready(shape, compiled, done=True)

    def _set_ready(self, shape: Shape, executable: jax.stages.Compiled, done: bool) -> None:
        with self._changed:
            self.ready[shape] = executable
            self._num_done += done
            self._changed.notify_all()
        if done:
            self._bar.update(1)
