"""The processes of one ``torchrun`` launch: rendezvous, work shares, and failures that end them all.

torchrun starts ``WORLD_SIZE`` processes; ``RANK`` names each. They meet through torch's
distributed key-value store (``init_process_group``'s own, served by torchrun's agent or by rank
0), and use nothing else of it: no collective ever waits on a peer that is gone, because every
wait here is a poll of that store that also watches for failures.

- ``fail(message)``: the first error on any rank is written once to the store; every rank's
  watchdog thread sees it within ``POLL_S`` and ends its process with exit status 2 after printing
  that one line (``error: ...``), whatever the rank was doing. A rank that stops beating (killed,
  or its node gone) for ``STALE_S`` is a failure too, and so is a store that cannot be reached.
  Nothing is left for torchrun's agent to kill; its failure summary may follow the line.
- ``barrier(name)`` and ``from_rank0(name, compute)``: rank 0 decides (what is pending, what is
  damaged) and every rank acts on that one decision, so damage found once is repaired once.
- ``mine(items)``: this rank's share of an ordered list (item i goes to rank ``i % world``).

One process (``WORLD_SIZE`` unset or 1) needs none of this: ``Ranks(1, 0)`` does every share
and every wait returns at once.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import signal
import sys
import threading
import time
from typing import Callable, Sequence, TypeVar

from engine.errors import UserError

T = TypeVar("T")

#: How often each rank beats and looks for a failure (seconds).
POLL_S = 0.5
#: A rank silent this long has stopped (killed, frozen, its node lost): every rank ends.
#: ``STEP_NEURONS_STALE_S`` overrides it (the fault tests wait less).
STALE_S = float(os.environ.get("STEP_NEURONS_STALE_S", "30"))
#: Exit status of every rank after any rank's failure (the CLI's status for a user error).
EXIT_STATUS = 2


class Ranks:
    """This process's place in the launch. ``world == 1``: every method is the one-process case."""

    def __init__(self, world: int = 1, rank: int = 0):
        self.world, self.rank = int(world), int(rank)
        self._store = None
        self._stop = threading.Event()
        self._seq: dict[str, int] = {}
        self._leaving = threading.Lock()
        self._ending = False

    @classmethod
    def from_environment(cls) -> "Ranks":
        return cls(int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0")))

    # -- joining -----------------------------------------------------------------------------
    def start(self, backend: str = "gloo") -> "Ranks":
        """Join the launch (``init_process_group`` over ``env://``) and start the watchdog."""
        if self.world == 1 or self._store is not None:
            return self
        import torch.distributed as dist

        if not dist.is_initialized():
            # a rank that never arrives (dead before joining) fails the launch within 2 x STALE_S
            try:
                dist.init_process_group(backend=backend, timeout=_dt.timedelta(seconds=2 * STALE_S))
            except Exception as exc:  # noqa: BLE001 - any failure to meet is this one line
                raise UserError(f"rank {self.rank} could not meet the other {self.world - 1} rank(s) at "
                                f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')} within "
                                f"{2 * STALE_S:.0f} s ({type(exc).__name__}); rerun the same launch") from None
        self._store = dist.distributed_c10d._get_default_store()
        self._store.set(f"beat/{self.rank}", "0")
        self._thread = threading.Thread(target=self._watch, name="ranks-watchdog", daemon=True)
        self._thread.start()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def _on_sigterm(self, signum, frame) -> None:
        """torchrun's agent terminates the others the moment one rank exits; a rank that is
        already leaving with the launch's error finishes that itself (exit 2, its one line)."""
        if self._ending:
            return
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    def _watch(self) -> None:
        seen: dict[int, tuple[bytes, float]] = {}
        beat = 0
        while not self._stop.wait(POLL_S):
            try:
                beat += 1
                self._store.set(f"beat/{self.rank}", str(beat))
                if self._store.check(["abort"]):
                    self._leave(self._store.get("abort").decode("utf-8", "replace"))
                now = time.monotonic()
                for r in range(self.world):
                    if r == self.rank or not self._store.check([f"beat/{r}"]):
                        continue
                    value = self._store.get(f"beat/{r}")
                    if r not in seen or seen[r][0] != value:
                        seen[r] = (value, now)
                    elif value != b"done" and now - seen[r][1] > STALE_S:
                        self.fail(f"rank {r} stopped responding for {STALE_S:.0f} s (killed, or its node "
                                  "lost); rerun the same launch to resume")
            except Exception as exc:  # the store itself is gone: so is the process serving it
                if self._stop.is_set() or self._ending:  # leaving already, with the launch's line
                    return
                self._end(f"lost contact with the other ranks ({type(exc).__name__}: {exc}); "
                          "rerun the same launch to resume")

    def _end(self, message: str) -> None:
        print(f"error: {message}", file=sys.stderr, flush=True)
        os._exit(EXIT_STATUS)

    def _leave(self, message: str) -> None:
        """Acknowledge the launch's failure, wait (bounded) until every other rank has too, end.

        Waiting matters: this process may be the one serving the store, and a peer that has not
        read the failure yet would only see the connection drop."""
        self._ending = True
        with self._leaving:  # the watchdog and the failing main thread: one of them ends the process
            try:
                self._store.set(f"ack/{self.rank}", "1")
                self._wait_for("ack")
                if self.rank == 0:  # it may serve the store: the last to go
                    self._wait_for("left")
                else:
                    self._store.set(f"left/{self.rank}", "1")
            except Exception:  # the store is gone: nobody is left to wait for
                pass
            self._end(message)

    def _wait_for(self, what: str) -> None:
        """Until every other rank has set ``<what>/<rank>`` (bounded: a killed rank never will)."""
        others = [f"{what}/{r}" for r in range(self.world) if r != self.rank]
        deadline = time.monotonic() + 4 * POLL_S + 2
        while time.monotonic() < deadline and not self._store.check(others):
            time.sleep(POLL_S / 5)

    def finish(self) -> None:
        """Leave cleanly after the last barrier: stop beating, say "done" (not dead), and on
        rank 0, which may serve the store, stay until every rank has said so."""
        if self._store is None:
            return
        self._stop.set()
        self._thread.join()
        self._store.set(f"beat/{self.rank}", "done")
        if self.rank == 0:
            deadline = time.monotonic() + STALE_S
            while time.monotonic() < deadline and not all(
                    self._store.get(f"beat/{r}") == b"done" for r in range(self.world)):
                time.sleep(POLL_S / 5)
        self._store = None

    # -- failures ----------------------------------------------------------------------------
    def fail(self, message: str) -> None:
        """Make ``message`` every rank's error (the first failure wins) and end this process."""
        if self._store is not None:
            text = f"{message} (rank {self.rank})"
            try:
                self._store.compare_set("abort", "", text)
                text = self._store.get("abort").decode("utf-8", "replace")  # the first failure wins
            except Exception:
                pass
            self._leave(text)
        raise RuntimeError(message)  # one process: the caller's own error handling applies

    # -- waiting together --------------------------------------------------------------------
    def _key(self, name: str) -> str:
        n = self._seq[name] = self._seq.get(name, 0) + 1
        return f"{name}#{n}"

    def barrier(self, name: str) -> None:
        """Wait until every rank reaches the barrier ``name`` (polled; a failure anywhere ends it)."""
        if self.world == 1:
            return
        key = self._key(f"barrier/{name}")
        self._store.add(key, 1)
        while int(self._store.add(key, 0)) < self.world:
            time.sleep(POLL_S / 5)

    def from_rank0(self, name: str, compute: Callable[[], T]) -> T:
        """``compute()`` on rank 0, its (JSON) result on every rank."""
        if self.world == 1:
            return compute()
        key = self._key(f"value/{name}")
        if self.rank == 0:
            value = compute()
            self._store.set(key, json.dumps(value))
            return value
        while not self._store.check([key]):
            time.sleep(POLL_S / 5)
        return json.loads(self._store.get(key))

    def mine(self, items: Sequence[T]) -> list[T]:
        """This rank's share of ``items``: item i goes to rank ``i % world``."""
        return [x for i, x in enumerate(items) if i % self.world == self.rank]


_CURRENT = Ranks()


def current() -> Ranks:
    """The launch this process belongs to (one process until ``join`` is called)."""
    return _CURRENT


def join(backend: str = "gloo") -> Ranks:
    """Join the launch named by torchrun's environment (once per process) and return it."""
    global _CURRENT
    if _CURRENT.world == 1 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        _CURRENT = Ranks.from_environment().start(backend)
    return _CURRENT
