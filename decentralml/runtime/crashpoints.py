"""Named crash points for recovery tests (failpoints, as FoundationDB and TiKV use them).

``DECENTRALML_CRASH_AT=<name>`` kills the process with SIGKILL when it reaches ``<name>``, as
a power cut would: no ``finally``, no Prefect state hook, no flush. Unset — always, outside the
recovery tests — a crash point does nothing. The creator's points, in a round's order:
``publishing`` (the round's files stored, no task created), ``published`` (the task is open,
results arrive while the creator is gone), ``reviewed``, ``checkpointing`` (the strategy's
state stored, not yet the weights beside it), ``checkpointed`` (new weights stored, nobody paid
yet), ``settled`` (paid, round closed). The settlement itself is one marketplace write (one
transaction, one extrinsic): there is no point inside it.
"""

from __future__ import annotations

import os
import signal

CRASH_AT = "DECENTRALML_CRASH_AT"
CRASH_MODE = "DECENTRALML_CRASH_MODE"
"""``kill`` (default) or ``interrupt``: raise KeyboardInterrupt instead, as Ctrl-C or a
cancelled run would, so that the orchestrator's crash handling (state hooks) runs; or ``hang``:
block forever in native code holding the GIL, as a thread deadlocked on a TensorFlow lock did
(no Python signal handler can run: the SIGTERM tests, tests/test_sigterm.py)."""


def crashpoint(name: str) -> None:
    if os.environ.get(CRASH_AT) != name:
        return
    if os.environ.get(CRASH_MODE) == "interrupt":
        raise KeyboardInterrupt(f"crash point {name}")
    if os.environ.get(CRASH_MODE) == "hang":
        _hang_holding_the_gil(name)
    os.kill(os.getpid(), signal.SIGKILL)


def _hang_holding_the_gil(name: str) -> None:
    """Lock a mutex twice through ``ctypes.PyDLL`` (whose calls keep the GIL): a futex wait
    that no signal interrupts, the state of the deadlock in issue 20."""
    import ctypes
    import sys

    print(f"crash point {name}: hanging", file=sys.stderr, flush=True)
    libc = ctypes.PyDLL(None)
    mutex = ctypes.create_string_buffer(64)  # zeroed: PTHREAD_MUTEX_INITIALIZER on glibc
    libc.pthread_mutex_lock(mutex)
    libc.pthread_mutex_lock(mutex)
