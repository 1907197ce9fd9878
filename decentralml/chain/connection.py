"""One websocket connection to a node: the process-wide lock, reads that survive a restart.

Reads are retried with back-off while the connection is down (they are idempotent);
submissions are not, and take the lock themselves (see ``submit``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from substrateinterface import SubstrateInterface
from websocket import WebSocketException

from decentralml.protocol.errors import ChainError

SS58_FORMAT = 42
_T = TypeVar("_T")

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (OSError, WebSocketException)
"""What a dropped or refused websocket raises (ConnectionRefusedError is an OSError)."""

_SCALECODEC_LOCK = threading.RLock()
"""Held by every client of the process for each call into substrate-interface. scalecodec
attaches the RuntimeConfigurationObject that looks a type up to the decoder *class*, which
all interfaces share, so two interfaces decoding at once (a first metadata load in one thread,
any read in another) fail with 'Decoder class for "Compact<u32>" not found'. Calls are
short reads; waiting for a block takes the lock one read at a time."""


def connect(url: str, timeout: float) -> SubstrateInterface:
    """Retry while the node is still starting (connection refused), up to ``timeout``."""
    deadline = time.monotonic() + timeout
    delay = 0.2
    while True:
        try:
            with _SCALECODEC_LOCK:
                return SubstrateInterface(url, ss58_format=SS58_FORMAT, auto_reconnect=True)
        except CONNECTION_ERRORS as exc:
            if time.monotonic() >= deadline:
                raise ChainError(
                    f"cannot connect to the chain at {url} ({exc}); is it running? "
                    "Start a local one with `make chain`"
                ) from exc
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


class Connection:
    """One websocket connection to a node, used under the process-wide ``_SCALECODEC_LOCK``
    (neither the socket nor scalecodec is thread-safe)."""

    def __init__(self, url: str, *, connect_timeout: float, retry_seconds: float):
        self.url = url
        self.retry_seconds = retry_seconds
        self.lock = _SCALECODEC_LOCK
        self.substrate = connect(url, connect_timeout)

    def read(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Run a read under the lock, reconnecting on connection errors until retry_seconds.
        Reads are idempotent, so retrying them is always safe."""
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.2
        while True:
            try:
                with self.lock:
                    return fn(*args, **kwargs)
            except CONNECTION_ERRORS as exc:
                if time.monotonic() >= deadline:
                    raise ChainError(
                        f"lost the connection to the chain at {self.url} ({exc}) and could not "
                        f"reconnect within {self.retry_seconds:.0f}s; is it running?"
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                self.reconnect()

    def reconnect(self) -> None:
        try:
            with self.lock:
                self.substrate.connect_websocket()
        except CONNECTION_ERRORS:
            pass  # still down: the next attempt of read retries

    def close(self) -> None:
        with self.lock:
            self.substrate.close()

    @contextmanager
    def locked(self) -> Iterator[SubstrateInterface]:
        """The underlying interface under the process-wide lock, for a sequence of raw calls
        made while other threads may use the chain."""
        with self.lock:
            yield self.substrate

    def rpc(self, method: str, params: list[Any]) -> Any:
        """A raw JSON-RPC call (e.g. chopsticks' dev_newBlock); raises ChainError on error."""
        response = self.read(self.substrate.rpc_request, method, params)
        if "error" in response:
            raise ChainError(f"RPC {method} failed: {response['error']}")
        return response.get("result")
