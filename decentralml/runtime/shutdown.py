"""A clean stop on SIGTERM and SIGINT for the long-running contributor agent.

The first signal only asks to stop: the agent takes no new task, drops a task that has not yet
taken a slot, and finishes one that has (the slot is paid for on a chain, and the creator waits
for its result), then returns normally. Returning normally is what lets Prefect record the run
Cancelled instead of Crashed, and lets the interpreter's exit hooks stop the temporary Prefect
server of ephemeral mode; Python's default SIGTERM action kills the process before either.
A second signal stops at once (KeyboardInterrupt for SIGINT, SystemExit for SIGTERM).

SIGTERM also has a deadline: a command still running ``STOP_GRACE_SECONDS`` after it is killed
by its watcher (decentralml.runtime.reaper), stuck or not, so a task in progress is finished
only if it can be within that time (``docker stop`` and most supervisors kill after 10 s).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
STOP_GRACE_SECONDS = float(os.environ.get("DECENTRALML_STOP_GRACE_SECONDS", "5"))
"""How long after SIGTERM a command may take to end before it is killed: 5 s leaves time for
the kill of a large process, its temporary Prefect server and its watcher to end too, within
10 s of the signal on a loaded machine (9.1-9.3 s with 6 s at a load of 23 on 2 cores)."""


class StopRequest:
    """Whether (and by which signal) this process was asked to stop."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "request"

    @property
    def exit_status(self) -> int:
        """0 after SIGTERM (a stop asked for and done), 130 after Ctrl-C, as a shell reports it."""
        return 128 + signal.SIGINT if self.signum == signal.SIGINT else 0

    def handle(self, signum: int, frame: FrameType | None = None) -> None:
        if self.event.is_set():  # the second signal: the user does not want to wait
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)
        self.signum = signum
        self.event.set()
        log.warning(
            "%s received: finishing the task in progress, then stopping (send it again to stop "
            "at once)",
            signal.Signals(signum).name,
        )

    @contextmanager
    def on_signals(self) -> Iterator[StopRequest]:
        """Route SIGTERM and SIGINT here while inside; restore the previous handlers after.

        Signal handlers can only be set from the main thread; elsewhere this does nothing
        and the process keeps its handlers (a flow run in a worker thread, a test)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {signum: signal.signal(signum, self.handle) for signum in STOP_SIGNALS}
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


STOP = StopRequest()
"""The process's stop request: signals belong to the process, so there is one."""
