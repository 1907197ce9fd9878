"""Artifact storage over fsspec URLs: one code path for file://, memory://, s3:// and the rest.

Layout under the root URL (a run is one federated training; a round is one task):

    runs/<run>/round-<n>/assets.tar.gz              contributor package
    runs/<run>/round-<n>/global.safetensors         the global weights the round starts from
    runs/<run>/round-<n>/results/<submission>.safetensors   contributors' weights
    runs/<run>/checkpoints/round-<n>.safetensors    the global weights after round n
    runs/<run>/checkpoints/round-<n>.strategy.safetensors   the strategy's state after round n

Every artifact is addressed by a full URL and its sha256 is recorded next to it on the
marketplace; readers verify it, so a swapped or damaged file is detected, not used.
Credentials never appear in URLs: fsspec backends read them from the environment (for s3://,
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN or a named AWS_PROFILE). Where
s3:// URLs resolve (an S3 endpoint other than AWS's) is not a secret: the creator writes it on
the task record (TaskSpec.storage_endpoint), and a contributor reaches the task's files through
it with its own credentials (``ArtifactStore.at_endpoint``).

Failures come in two kinds (decentralml.protocol.errors): what is stored is wrong (missing,
too large, the same wrong digest on two reads) — the writer's fault, final — or the storage
could not be used (StorageUnavailable) — retried here with backoff (``Retries``), and still
transient when the retries run out: a reader must not blame the writer for it. Missing or refused S3
credentials are neither: StorageCredentialsError, raised at once and never retried.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import hashlib
import logging
import os
import posixpath
import stat
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

import fsspec
from fsspec.implementations.local import LocalFileSystem

from decentralml.protocol import layout
from decentralml.protocol.errors import (
    ArtifactMissing,
    ArtifactTooLarge,
    ConfigError,
    DigestMismatch,
    StorageCredentialsError,
    StorageError,
    StorageUnavailable,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
_READ_CHUNK = 2**20


def _backend_errors() -> tuple[type[BaseException], ...]:
    """What a backend raises when it cannot be used: OSError for local and most fsspec
    backends; s3fs lets botocore's connection errors through (a stopped S3 server raises
    EndpointConnectionError, which is not an OSError)."""
    errors: list[type[BaseException]] = [OSError]
    try:
        from botocore.exceptions import BotoCoreError
    except ImportError:
        pass
    else:
        errors.append(BotoCoreError)
    return tuple(errors)


_UNAVAILABLE = _backend_errors()


def _missing_credentials_errors() -> tuple[type[BaseException], ...]:
    """What botocore raises when the environment holds no (or half a) credential."""
    try:
        from botocore.exceptions import NoCredentialsError, PartialCredentialsError
    except ImportError:
        return ()
    return (NoCredentialsError, PartialCredentialsError)


_NO_CREDENTIALS = _missing_credentials_errors()
SET_CREDENTIALS = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"


def credentials_problem(url: str, endpoint_url: str | None, error: BaseException) -> str | None:
    """One line naming the variables to set if ``error`` says the S3 storage of ``url`` had no
    credentials or refused them; None for any other error. s3fs turns every 403 (a wrong
    secret, an unknown key id, a key without rights to the bucket) into PermissionError; on
    s3:// that is always about the credentials the request was signed with."""
    if not url.startswith("s3://"):
        return None
    bucket = url[len("s3://") :].split("/", 1)[0]
    where = f"storage s3://{bucket} at {endpoint_url or 'AWS'}"
    if isinstance(error, _NO_CREDENTIALS):
        return f"{where} needs credentials and found none: {SET_CREDENTIALS}"
    if isinstance(error, PermissionError):
        reason = str(error).strip().splitlines()[0] if str(error).strip() else "access denied"
        return f"{where} refused the credentials ({reason}): {SET_CREDENTIALS}"
    return None


RETRY_DELAYS_SECONDS: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)
"""The back-off between tries of anything retried: the one home of its default (``Retries``
here, so the store, pulls, the config's ``storage.retry_delays`` and the step retries of
tasks.policy). Each failure is retried by one layer only (docs/architecture.md)."""


@dataclass(frozen=True)
class Retries:
    """How a storage operation is retried while the storage is unavailable: ``attempts``
    tries in all (1: no retry), waiting ``delays[i]`` seconds after the (i+1)-th failure (the
    last delay repeats). Default: 6 tries over 15.5 s of waiting: a storage restart or a
    dropped connection of a few seconds is ridden out, since nothing above the store retries
    it again (before one retry layer, 4 store tries inside 4 task tries waited ~17 s)."""

    attempts: int = 6
    delays: tuple[float, ...] = RETRY_DELAYS_SECONDS

    def __post_init__(self) -> None:
        if self.attempts < 1 or any(delay < 0 for delay in self.delays):
            raise ValueError(f"attempts must be >= 1 and delays >= 0, got {self}")


NO_RETRIES = Retries(attempts=1, delays=())


def with_retries(
    fn: Callable[[], T],
    attempts: int,
    delays: Sequence[float],
    retry_on: tuple[type[BaseException], ...] = (StorageUnavailable,),
    sleep: Callable[[float], None] = time.sleep,
    what: str = "storage operation",
) -> T:
    """``fn()``, tried up to ``attempts`` times while it raises one of ``retry_on``, waiting
    ``delays[i]`` after the (i+1)-th failure (the last delay repeats; none: no wait). The
    last failure is raised as it is; any other error at once."""
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except retry_on as error:
            if attempt == attempts:
                raise
            delay = delays[min(attempt, len(delays)) - 1] if delays else 0.0
            log.warning(
                "%s failed (attempt %d of %d), retrying in %.1f s: %s",
                what, attempt, attempts, delay, error,
            )  # fmt: skip
            sleep(delay)
    raise AssertionError("unreachable: the loop returns or raises")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def normalize_url(url: str) -> str:
    """Make local URLs absolute so that every party resolves them to the same place."""
    if "://" not in url:
        return Path(url).resolve().as_uri()
    protocol, path = url.split("://", 1)
    if protocol == "file" and not path.startswith("/"):
        return Path(path).resolve().as_uri()
    # Strip a trailing slash but never the "//" after the protocol ("memory://" stays).
    return f"{protocol}://{path.rstrip('/') or ('/' if protocol == 'file' else '')}"


def check_protocol(url: str) -> None:
    """Refuse a URL that no installed fsspec backend serves, without connecting to anything.

    A ConfigError, not a StorageError: an unknown protocol or a missing backend package is
    not transient, so it must never be retried (tasks/policy.py), only fixed."""
    protocols = url.split("://", 1)[0] if "://" in url else "file"
    for protocol in protocols.split("::"):  # chained URLs: simplecache::s3://bucket/key
        try:
            fsspec.get_filesystem_class(protocol)
        except ValueError:
            raise ConfigError(
                f"no storage backend for {url}: fsspec knows no protocol {protocol!r} "
                "(file://, s3://, memory:// ... see fsspec.available_protocols())"
            ) from None
        except ImportError as error:
            raise ConfigError(
                f"no storage backend for {url}: protocol {protocol!r} needs a package that is "
                f"not installed ({error})"
            ) from None


def _read_at_most(handle: IO[bytes], limit: int, expected: int | None = None) -> bytes:
    """Up to ``limit`` bytes: a raw handle may return less than asked before the end.

    With the ``expected`` size, the first read asks for all of it (and one byte more, to see a
    file that grew): a local file then arrives in one bytes object that is returned as it is,
    not copied again by a join (the review reads each result once)."""
    parts: list[bytes] = []
    left = limit
    ask = _READ_CHUNK if expected is None else expected + 1
    while left > 0:
        part = handle.read(min(left, ask))
        ask = _READ_CHUNK
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _refuse_over(url: str, size: int | None, max_bytes: int | None) -> None:
    if max_bytes is not None and size is not None and size > max_bytes:
        raise ArtifactTooLarge(f"{url} is {size} bytes, over the {max_bytes}-byte limit")


def _bounded_read(url: str, handle: IO[bytes], max_bytes: int | None, size: int | None) -> bytes:
    """The whole file, or ArtifactTooLarge once more than ``max_bytes`` came in."""
    if max_bytes is None:
        return handle.read()
    data = _read_at_most(handle, max_bytes + 1, size)
    if len(data) > max_bytes:
        raise ArtifactTooLarge(
            f"{url} is more than {max_bytes} bytes, over the {max_bytes}-byte limit "
            "(the read stopped there)"
        )
    return data


@dataclass(frozen=True)
class StoredArtifact:
    url: str
    sha256: str
    size: int


class ArtifactStore:
    """Reads and writes artifacts under a root URL; see the module docstring for the layout."""

    def __init__(
        self, root_url: str, endpoint_url: str | None = None, retries: Retries = Retries()
    ) -> None:
        self.root_url = normalize_url(root_url)
        self.retries = retries
        self.endpoint_url = endpoint_url or None
        check_protocol(self.root_url)

    def at_endpoint(self, endpoint_url: str | None) -> ArtifactStore:
        """This store (same root, retries and kind) with its s3:// URLs resolved at
        ``endpoint_url`` (None or "": AWS): how a contributor reaches a task's files at the
        endpoint its record names. Credentials still come from this party's environment."""
        clone = copy.copy(self)
        clone.endpoint_url = endpoint_url or None
        return clone

    def check_access(self) -> None:
        """One cheap request (does the root exist?) that fails now, with one line, if S3
        credentials are missing or refused. Not retried; an unreachable storage is not
        reported here (StorageUnavailable is left to the round's retries)."""
        with contextlib.suppress(StorageUnavailable):
            self._guard(self.root_url, lambda fs, path: fs.exists(path), "reach")

    def url_for(self, *parts: str) -> str:
        return posixpath.join(self.root_url, *parts)

    def run_url(self, run: str) -> str:
        return self.url_for(*layout.run_parts(run))

    def round_url(self, run: str, round_number: int, name: str) -> str:
        return self.url_for(*layout.round_parts(run, round_number, name))

    def checkpoint_url(self, run: str, round_number: int) -> str:
        return self.url_for(*layout.checkpoint_parts(run, round_number))

    def strategy_checkpoint_url(self, run: str, round_number: int) -> str:
        return self.url_for(*layout.strategy_checkpoint_parts(run, round_number))

    def put(self, url: str, data: bytes) -> StoredArtifact:
        """Write bytes to ``url`` (parents created), return its digest. Retried while the
        storage is unavailable; StorageUnavailable when it stays so."""
        self._retry(lambda: self._write(url, data), f"write {url}")
        return StoredArtifact(url=url, sha256=sha256_hex(data), size=len(data))

    def get(
        self, url: str, expected_sha256: str | None = None, max_bytes: int | None = None
    ) -> bytes:
        """Read ``url``, verified against ``expected_sha256`` and bounded by ``max_bytes``.

        Raises ArtifactMissing, ArtifactTooLarge or DigestMismatch for what is stored (final),
        StorageUnavailable when the storage stays unusable through the retries. A read with
        the wrong digest is read again: the same wrong digest twice is what is stored
        (DigestMismatch); the recorded one the second time was damage on the way (the good
        bytes are returned); a third digest means reads are being damaged (unavailable).
        """
        return self._retry(
            lambda: self._read_verified(url, expected_sha256, max_bytes), f"read {url}"
        )

    def _retry(self, fn: Callable[[], T], what: str) -> T:
        return with_retries(fn, self.retries.attempts, self.retries.delays, what=what)

    def _write(self, url: str, data: bytes) -> None:
        """Whole or not at all: a crash mid-write never leaves a torn file where a reader (a
        resuming creator reading its checkpoint) would take it for the real one. A local file
        is written under a temporary name and renamed over the target (atomic on POSIX); an
        object store gets one PUT, which its readers see complete or not at all."""

        def write(fs: fsspec.AbstractFileSystem, path: str) -> None:
            parent = posixpath.dirname(path)
            if parent:
                fs.makedirs(parent, exist_ok=True)
            if not isinstance(fs, LocalFileSystem):
                fs.pipe_file(path, data)
                return
            partial = f"{path}.{uuid.uuid4().hex}.partial"
            try:
                with fs.open(partial, "wb") as handle:
                    handle.write(data)
                os.replace(partial, path)
            finally:
                if os.path.exists(partial):
                    os.unlink(partial)

        self._guard(url, write, "write")

    def _guard(
        self, url: str, operation: Callable[[fsspec.AbstractFileSystem, str], T], verb: str
    ) -> T:
        """``operation(fs, path)`` on ``url``'s filesystem, its failures typed: missing or
        refused credentials (final) apart from the storage being unusable (transient)."""
        fs, path = self._fs(url)
        try:
            return operation(fs, path)
        except (*_UNAVAILABLE, *_NO_CREDENTIALS) as error:
            problem = credentials_problem(url, self.endpoint_url, error)
            if problem:
                raise StorageCredentialsError(problem) from None
            raise StorageUnavailable(f"cannot {verb} {url}: {error}") from error

    def _read_verified(self, url: str, expected_sha256: str | None, max_bytes: int | None) -> bytes:
        data = self._read(url, max_bytes)
        if not expected_sha256 or sha256_hex(data) == expected_sha256:
            return data
        again = self._read(url, max_bytes)
        if sha256_hex(again) == expected_sha256:
            log.warning("%s: one read came back damaged; the next one was intact", url)
            return again
        if again == data:
            raise DigestMismatch(
                f"{url} has sha256 {sha256_hex(data)}, but {expected_sha256} was recorded: "
                "the file was changed or damaged after it was registered"
            )
        raise StorageUnavailable(
            f"{url} gave different bytes on two reads (sha256 {sha256_hex(data)}, then "
            f"{sha256_hex(again)}), neither the recorded {expected_sha256}: reads are being "
            "damaged on the way, or the file is being rewritten"
        )

    def _read(self, url: str, max_bytes: int | None) -> bytes:
        """One read. With ``max_bytes`` at most ``max_bytes + 1`` bytes are ever read: the
        size the backend reports is checked first, but a backend may not know it (or the file
        may grow between the two calls), so the read itself is bounded too."""
        if url.startswith("file://"):
            return self._read_local(url, max_bytes)

        def read(fs: fsspec.AbstractFileSystem, path: str) -> bytes:
            try:
                size = fs.size(path)
                _refuse_over(url, size, max_bytes)
                with fs.open(path, "rb") as handle:
                    return _bounded_read(url, handle, max_bytes, size)
            except FileNotFoundError:
                raise ArtifactMissing(f"{url} does not exist") from None

        return self._guard(url, read, "read")

    def _read_local(self, url: str, max_bytes: int | None) -> bytes:
        """``_read`` for a file:// URL without fsspec: its filesystem lookup, ``size`` (a
        stat by path) and file wrapper cost more than reading a 0.4 MB result (the
        creator's review reads every result of a round). The path is the one fsspec resolves
        for the same URL; the size comes from the open file (fstat), so it is the file the read
        then bounds."""
        path = LocalFileSystem._strip_protocol(url)
        self._refuse_outside_root(url, path)
        try:
            # No link is followed and nothing blocks: a link, FIFO or device that a writer put
            # where a result belongs is refused before a byte of what it names is read.
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            raise ArtifactMissing(f"{url} does not exist") from None
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):  # a link, a socket
                raise ArtifactMissing(f"{url} is not a regular file") from None
            raise StorageUnavailable(f"cannot read {url}: {error}") from error
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            os.close(fd)
            if stat.S_ISDIR(status.st_mode):  # our own storage in a state we cannot read
                raise StorageUnavailable(f"cannot read {url}: it is a folder")
            raise ArtifactMissing(f"{url} is not a regular file")
        with open(fd, "rb", buffering=0) as handle:
            _refuse_over(url, status.st_size, max_bytes)
            try:
                return _bounded_read(url, handle, max_bytes, status.st_size)
            except OSError as error:
                raise StorageUnavailable(f"cannot read {url}: {error}") from error

    def _refuse_outside_root(self, url: str, path: str) -> None:
        """A folder on the way replaced by a link must not lead a read of a place in this
        store (where the creator reads results) out of it. A URL outside the store (a task's
        files named by its record, digest-checked) is read where it is."""
        if not self.root_url.startswith("file://") or not self.holds(url):
            return
        root = LocalFileSystem._strip_protocol(self.root_url)
        if not os.path.isdir(root):  # a store rooted at one file (the seed API's downloads)
            root = os.path.dirname(root)
        root = os.path.realpath(root)
        folder = os.path.realpath(os.path.dirname(path))
        if folder != root and not folder.startswith(root.rstrip(os.sep) + os.sep):
            raise ArtifactMissing(f"{url} is not a regular file of this storage")

    def link(self, url: str, seconds: int) -> str:
        """A time-limited link that lets anyone holding it read ``url`` (an S3 presigned GET,
        signed with this party's own credentials): how a contributor hands the creator its
        hosted result without giving it any credential."""
        if not url.startswith("s3://"):
            raise StorageError(f"only s3:// objects can be linked, not {url}")
        return str(self._guard(url, lambda fs, path: fs.url(path, expires=seconds), "sign"))

    def holds(self, url: str) -> bool:
        """Whether ``url`` lies under this store's root: the only places its owner reads."""
        root = self.root_url.rstrip("/") + "/"
        return url.startswith(root) and ".." not in url[len(root) :].split("/")

    def exists(self, url: str) -> bool:
        return bool(self._guard(url, lambda fs, path: fs.exists(path), "reach"))

    def _fs(self, url: str) -> tuple[fsspec.AbstractFileSystem, str]:
        check_protocol(url)  # URLs read from a task record may name any protocol
        options: dict[str, object] = {}
        if self.endpoint_url and url.startswith("s3://"):
            options["client_kwargs"] = {"endpoint_url": self.endpoint_url}
        try:
            return fsspec.core.url_to_fs(url, **options)
        except (ImportError, ValueError) as error:
            raise StorageError(f"no storage backend for {url}: {error}") from error
