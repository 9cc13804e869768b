"""Keep the next pairs ready while the user reads, so a vote never waits for generation.

A background thread fills a small queue of pairs for library prompts. Only one generation runs at a time (two
would only share the same cores); a user's own request takes priority: the background generation in progress
is abandoned at its next token and the user's runs at once. Before each background pair, `prepare()` runs in the
same thread but outside the generation lock: slow upkeep (loading a newer reward model or another pairing's
adapters, core/collect/chooser.py) never holds up a user's request, except that a PEFT adapter (plain and int8
engines; llama.cpp gives each adapter its own sampler) waits for the Generator to be free and a user's request for
its load, since PEFT wraps the shared model in place (core/collect/generate.py). It also runs every `idle_prepare_s` while the
queue is full, so a changed setting applies before the person takes the next pair; `drop_ready()` discards pairs
made for settings that changed.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable

from core.collect.generate import GenerationCancelled
from core.records import Pair

log = logging.getLogger(__name__)


class PairQueue:
    """`make_pair(should_stop)` builds one pair; `size` of them are kept ready; `prepare()` runs before each."""

    def __init__(self, make_pair: Callable[[Callable[[], bool]], Pair], size: int = 2, refill_delay_s: float = 0.3,
                 prepare: Callable[[], None] | None = None, idle_prepare_s: float = 2.0):
        self._make_pair, self.size, self.refill_delay_s, self._prepare = make_pair, size, refill_delay_s, prepare
        self.idle_prepare_s = idle_prepare_s
        self._last_take = 0.0
        self._ready: queue.Queue[Pair] = queue.Queue()
        self._generating = threading.Lock()  # one generation at a time, foreground or background
        self._wake = threading.Condition()
        self._foreground_waiting = 0
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None

    def start(self) -> "PairQueue":
        if self.size > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._fill, name="pair-queue", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        with self._wake:
            self._wake.notify_all()
        if self._thread:
            self._thread.join(timeout=30)

    def ready_count(self) -> int:
        return self._ready.qsize()

    def take_ready(self) -> Pair | None:
        """A ready pair, or None if the queue is empty (never blocks)."""
        try:
            pair = self._ready.get_nowait()
        except queue.Empty:
            return None
        self._last_take = time.monotonic()
        with self._wake:
            self._wake.notify_all()  # room for one more
        return pair

    def drop_ready(self) -> int:
        """Discard every ready pair (made for settings that have changed since); returns how many."""
        dropped = 0
        while True:
            try:
                self._ready.get_nowait()
            except queue.Empty:
                break
            dropped += 1
        with self._wake:
            self._wake.notify_all()  # room to refill
        return dropped

    def run_foreground(self, build: Callable[[], Pair]) -> Pair:
        """Run a user's generation now, pre-empting the background one."""
        with self._wake:
            self._foreground_waiting += 1
        try:
            with self._generating:
                return build()
        finally:
            with self._wake:
                self._foreground_waiting -= 1
                self._wake.notify_all()

    def wait_until_full(self, timeout: float) -> bool:
        """Block until `size` pairs are ready (tests and benchmarks)."""
        with self._wake:
            return self._wake.wait_for(lambda: self._ready.qsize() >= self.size, timeout=timeout)

    def _should_yield(self) -> bool:
        return self._foreground_waiting > 0 or self._stopped.is_set()

    def _run_prepare(self) -> None:
        if self._prepare and not self._should_yield():
            try:
                self._prepare()
            except Exception:  # upkeep failing must not stop the queue: the pair is built as before
                log.exception("preparing the next background pair failed")

    def _fill(self) -> None:
        while not self._stopped.is_set():
            with self._wake:
                self._wake.wait_for(lambda: self._stopped.is_set() or (
                    self._ready.qsize() < self.size and not self._foreground_waiting), timeout=self.idle_prepare_s)
                if self._stopped.is_set() or self._foreground_waiting:
                    continue
                full = self._ready.qsize() >= self.size
            if full:  # nothing to build: still follow the settings, so a change need not wait for the next take
                self._run_prepare()
                continue
            # Let the request that just took a pair store it and reply before generation takes both cores.
            self._stopped.wait(max(0.0, self._last_take + self.refill_delay_s - time.monotonic()))
            self._run_prepare()
            with self._generating:
                if self._should_yield():
                    continue
                try:
                    pair = self._make_pair(self._should_yield)
                except GenerationCancelled:
                    continue
                except Exception as err:  # keep serving on-demand pairs; the UI shows the error
                    log.exception("background generation failed")
                    self.last_error = f"{type(err).__name__}: {err}"
                    self._stopped.wait(5.0)
                    continue
            self.last_error = None
            self._ready.put(pair)
            with self._wake:
                self._wake.notify_all()
