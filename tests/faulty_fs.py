"""A local filesystem that fails and damages reads on purpose, for storage fault tests.

``faulty:///abs/path`` is the real local file at ``/abs/path`` (fsspec's LocalFileSystem does
the work); while ``inject(...)`` is active, each open for reading draws from a seeded RNG:
with probability ``fail_reads`` it raises OSError (EIO, "injected fault"), else with
probability ``corrupt_reads`` it returns the file with one byte flipped. Paths containing one
of ``unreadable`` always fail (a storage that is down for those files). Writes are untouched
unless ``fail_writes`` is set. Importing this module registers the protocol, so an
``ArtifactStore("faulty:///tmp/x")`` (or a config's ``storage.url``) uses it.
"""

from __future__ import annotations

import errno
import io
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import ClassVar

import fsspec
from fsspec.implementations.local import LocalFileSystem

PROTOCOL = "faulty"


@dataclass
class Faults:
    """What to inject, and a count of what was injected."""

    fail_reads: float = 0.0
    corrupt_reads: float = 0.0
    fail_writes: float = 0.0
    unreadable: tuple[str, ...] = ()
    seed: int = 0
    reads: int = 0
    failed: int = 0
    writes: int = 0
    corrupted: int = 0
    _rng: random.Random = field(init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def on_read(self, path: str) -> str:
        """'fail', 'corrupt' or 'ok' for one read of ``path``."""
        with self._lock:
            self.reads += 1
            if any(part in path for part in self.unreadable):
                self.failed += 1
                return "fail"
            draw = self._rng.random()
            if draw < self.fail_reads:
                self.failed += 1
                return "fail"
            if draw < self.fail_reads + self.corrupt_reads:
                self.corrupted += 1
                return "corrupt"
            return "ok"

    def on_write(self) -> bool:
        """Whether this write (each one counted in ``writes``) fails."""
        with self._lock:
            self.writes += 1
            return self._rng.random() < self.fail_writes

    def flip(self, data: bytes) -> bytes:
        if not data:
            return data
        with self._lock:
            index = self._rng.randrange(len(data))
        damaged = bytearray(data)
        damaged[index] ^= 0xFF
        return bytes(damaged)


class FaultyFileSystem(LocalFileSystem):
    protocol = PROTOCOL
    faults: ClassVar[Faults] = Faults()  # nothing injected outside ``inject``

    @classmethod
    def _strip_protocol(cls, path):
        if isinstance(path, str) and path.startswith(f"{PROTOCOL}://"):
            path = path[len(f"{PROTOCOL}://") :]
        return super()._strip_protocol(path)

    def _open(self, path, mode="rb", block_size=None, **kwargs):
        faults = type(self).faults
        if "r" not in mode:
            if faults.on_write():
                raise OSError(errno.EIO, f"injected fault writing {path}")
            return super()._open(path, mode, block_size, **kwargs)
        outcome = faults.on_read(str(path))
        if outcome == "fail":
            raise OSError(errno.EIO, f"injected fault reading {path}")
        handle = super()._open(path, mode, block_size, **kwargs)
        if outcome == "ok":
            return handle
        with handle:
            return io.BytesIO(faults.flip(handle.read()))


fsspec.register_implementation(PROTOCOL, FaultyFileSystem, clobber=True)


@contextmanager
def inject(**settings: object) -> Iterator[Faults]:
    """Faults on every ``faulty://`` read (and write) inside the block; see ``Faults``."""
    faults = Faults(**settings)  # type: ignore[arg-type]
    previous, FaultyFileSystem.faults = FaultyFileSystem.faults, faults
    try:
        yield faults
    finally:
        FaultyFileSystem.faults = previous
