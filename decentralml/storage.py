"""Artifact storage over fsspec URLs: one code path for file://, memory://, s3:// and the rest.

Layout under the root URL (a run is one federated training; a round is one task):

    runs/<run>/round-<n>/assets.tar.gz              contributor package
    runs/<run>/round-<n>/global.safetensors         the global weights the round starts from
    runs/<run>/round-<n>/results/<submission>.safetensors   contributors' weights
    runs/<run>/checkpoints/round-<n>.safetensors    the global weights after round n

Every artifact is addressed by a full URL and its sha256 is recorded next to it on the
marketplace; readers verify it, so a swapped or damaged file is detected, not used.
Credentials never appear in URLs: fsspec backends read them from the environment.
"""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import fsspec

from decentralml.errors import (
    ArtifactMissing,
    ArtifactTooLarge,
    ConfigError,
    DigestMismatch,
    StorageError,
)

_READ_CHUNK = 2**20


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


def _read_at_most(handle: IO[bytes], limit: int) -> bytes:
    """Up to ``limit`` bytes: a raw handle may return less than asked before the end."""
    parts: list[bytes] = []
    left = limit
    while left > 0:
        part = handle.read(min(left, _READ_CHUNK))
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


@dataclass(frozen=True)
class StoredArtifact:
    url: str
    sha256: str
    size: int


class ArtifactStore:
    """Reads and writes artifacts under a root URL; see the module docstring for the layout."""

    def __init__(self, root_url: str, endpoint_url: str | None = None) -> None:
        self.root_url = normalize_url(root_url)
        check_protocol(self.root_url)
        self._options: dict[str, object] = {}
        if endpoint_url and self.root_url.startswith("s3://"):
            self._options["client_kwargs"] = {"endpoint_url": endpoint_url}

    def url_for(self, *parts: str) -> str:
        return posixpath.join(self.root_url, *parts)

    def round_url(self, run: str, round_number: int, name: str) -> str:
        return self.url_for("runs", run, f"round-{round_number}", name)

    def checkpoint_url(self, run: str, round_number: int) -> str:
        return self.url_for("runs", run, "checkpoints", f"round-{round_number}.safetensors")

    def put(self, url: str, data: bytes) -> StoredArtifact:
        """Write bytes to ``url`` (parents created), return its digest."""
        fs, path = self._fs(url)
        try:
            parent = posixpath.dirname(path)
            if parent:
                fs.makedirs(parent, exist_ok=True)
            with fs.open(path, "wb") as handle:
                handle.write(data)
        except OSError as error:
            raise StorageError(f"cannot write {url}: {error}") from error
        return StoredArtifact(url=url, sha256=sha256_hex(data), size=len(data))

    def get(
        self, url: str, expected_sha256: str | None = None, max_bytes: int | None = None
    ) -> bytes:
        """Read ``url``; refuse oversized files and digest mismatches with a StorageError.

        With ``max_bytes`` at most ``max_bytes + 1`` bytes are ever read: the size the backend
        reports is checked first, but a backend may not know it (or the file may grow between
        the two calls), so the read itself is bounded too.
        """
        fs, path = self._fs(url)
        try:
            size = fs.size(path)
            if max_bytes is not None and size is not None and size > max_bytes:
                raise ArtifactTooLarge(f"{url} is {size} bytes, over the {max_bytes}-byte limit")
            with fs.open(path, "rb") as handle:
                data = handle.read() if max_bytes is None else _read_at_most(handle, max_bytes + 1)
            if max_bytes is not None and len(data) > max_bytes:
                raise ArtifactTooLarge(
                    f"{url} is more than {max_bytes} bytes, over the {max_bytes}-byte limit "
                    "(the read stopped there)"
                )
        except FileNotFoundError:
            raise ArtifactMissing(f"{url} does not exist") from None
        except OSError as error:
            raise StorageError(f"cannot read {url}: {error}") from error
        if expected_sha256 and sha256_hex(data) != expected_sha256:
            raise DigestMismatch(
                f"{url} has sha256 {sha256_hex(data)}, but {expected_sha256} was recorded: "
                "the file was changed or damaged after it was registered"
            )
        return data

    def holds(self, url: str) -> bool:
        """Whether ``url`` lies under this store's root: the only places its owner reads."""
        root = self.root_url.rstrip("/") + "/"
        return url.startswith(root) and ".." not in url[len(root) :].split("/")

    def exists(self, url: str) -> bool:
        fs, path = self._fs(url)
        return bool(fs.exists(path))

    def _fs(self, url: str) -> tuple[fsspec.AbstractFileSystem, str]:
        check_protocol(url)  # URLs read from a task record may name any protocol
        try:
            return fsspec.core.url_to_fs(url, **self._options)
        except (ImportError, ValueError) as error:
            raise StorageError(f"no storage backend for {url}: {error}") from error
