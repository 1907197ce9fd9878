"""Pulling a result from the place its contributor hosts it: the creator's one read of a
location a stranger names.

A contributor that hosts its own result (its own bucket, behind a link it commits in its
result record, as Bittensor miners publish to their own model repository) is the only party
that can write or delete it; the creator pulls the bytes once, checks them against the digest
the contributor committed before anyone could read them, and keeps its own copy. The link is
hostile input, so the pull is narrow (OWASP's SSRF prevention rules):

- only the schemes the creator configures (https by default); no user name or password in it;
- the host is resolved once and every address it resolves to must be public: loopback,
  private, link-local (the cloud metadata address 169.254.169.254 among them), multicast,
  reserved and unspecified addresses are refused unless the creator names the host as allowed
  (a test's 127.0.0.1, a team's private network); the connection goes to the address that was
  checked, so a second lookup cannot point it elsewhere (DNS rebinding);
- no redirect is followed; the whole pull is bounded in time (connect, each read, and in all)
  and in bytes (the declared length first, then the read itself).

Refusals name only what the contributor wrote (its link, its host) and what came back from
its place, never anything about the creator's machine.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import urllib3

from decentralml.io.storage import NO_RETRIES, Retries, with_retries
from decentralml.protocol.errors import (
    ArtifactMissing,
    ArtifactTooLarge,
    DigestMismatch,
    FetchRefused,
    SourceUnreachable,
)

Resolver = Callable[[str, int], Sequence[str]]
CHUNK = 64 * 1024


@dataclass(frozen=True)
class PullPolicy:
    """What a creator allows a pull to reach. ``schemes``: the link schemes it follows
    (https; http only on a network it trusts). ``private_hosts``: host names or addresses
    allowed although they resolve to a non-public address. ``timeout_seconds``: the most one
    pull may take in all; ``retries``: tries while the place does not answer."""

    schemes: tuple[str, ...] = ("https",)
    private_hosts: tuple[str, ...] = ()
    timeout_seconds: float = 60.0
    retries: Retries = field(default_factory=lambda: Retries(attempts=3))


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the system resolver)."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise SourceUnreachable(f"host {host!r} does not resolve: {error.strerror}") from None
    return sorted({str(info[4][0]) for info in found})


def public(address: str) -> bool:
    """Whether ``address`` is an address of the public internet (an IPv4-mapped IPv6
    address is judged as the IPv4 address it carries)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


@dataclass(frozen=True)
class Target:
    """A link split and checked: where to connect and what to ask for."""

    scheme: str
    host: str
    port: int
    address: str
    request_path: str

    @property
    def host_header(self) -> str:
        default = {"http": 80, "https": 443}[self.scheme]
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == default else f"{name}:{self.port}"


def target(url: str, policy: PullPolicy, resolver: Resolver = resolve) -> Target:
    """``url`` checked against ``policy`` before anything is sent (FetchRefused)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise FetchRefused(f"result link is not a valid URL: {error}") from None
    scheme = parts.scheme.lower()
    if scheme not in policy.schemes or scheme not in ("http", "https"):
        allowed = ", ".join(policy.schemes) or "none"
        raise FetchRefused(f"result link scheme {scheme or 'none'!r} is not allowed ({allowed})")
    if parts.username is not None or parts.password is not None:
        raise FetchRefused("result link carries a user name or password")
    host = parts.hostname or ""
    if not host:
        raise FetchRefused("result link names no host")
    port = port or (443 if scheme == "https" else 80)
    addresses = resolver(host, port)
    if not addresses:
        raise SourceUnreachable(f"host {host!r} resolves to no address")
    if host not in policy.private_hosts:
        for address in addresses:
            if not public(address):
                raise FetchRefused(
                    f"result link host {host!r} resolves to a non-public address ({address}); "
                    "results are pulled only from public addresses"
                )
    path = parts.path or "/"
    request_path = f"{path}?{parts.query}" if parts.query else path
    return Target(scheme, host, port, addresses[0], request_path)


def pull(
    url: str,
    expected_sha256: str,
    max_bytes: int,
    policy: PullPolicy,
    *,
    resolver: Resolver = resolve,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bytes:
    """The bytes at ``url``, which must hash to ``expected_sha256`` and be at most
    ``max_bytes``. Raises FetchRefused (the link is not allowed: nothing was sent),
    ArtifactMissing (the place answered without the result), ArtifactTooLarge,
    DigestMismatch, or SourceUnreachable once the place has not answered through the
    policy's retries."""
    checked = target(url, policy, resolver)
    retries = policy.retries or NO_RETRIES
    return with_retries(
        lambda: _pull_once(checked, expected_sha256, max_bytes, policy, clock),
        retries.attempts,
        retries.delays,
        retry_on=(SourceUnreachable,),
        sleep=sleep,
        what=f"pull from {checked.host}",
    )


def _pool(checked: Target, policy: PullPolicy) -> urllib3.HTTPConnectionPool:
    seconds = policy.timeout_seconds
    timeout = urllib3.Timeout(connect=min(10.0, seconds), read=seconds)
    if checked.scheme == "https":
        return urllib3.HTTPSConnectionPool(
            checked.address,
            checked.port,
            timeout=timeout,
            retries=False,
            server_hostname=checked.host,
            assert_hostname=checked.host,
            cert_reqs="CERT_REQUIRED",
        )
    return urllib3.HTTPConnectionPool(checked.address, checked.port, timeout=timeout, retries=False)


def _pull_once(
    checked: Target,
    expected_sha256: str,
    max_bytes: int,
    policy: PullPolicy,
    clock: Callable[[], float],
) -> bytes:
    deadline = clock() + policy.timeout_seconds
    pool = _pool(checked, policy)
    try:
        response = pool.urlopen(
            "GET",
            checked.request_path,
            headers={"Host": checked.host_header, "Accept-Encoding": "identity"},
            redirect=False,
            preload_content=False,
            decode_content=False,
        )
    except urllib3.exceptions.HTTPError as error:
        raise SourceUnreachable(f"{checked.host} did not answer: {type(error).__name__}") from None
    try:
        return _body(checked, response, expected_sha256, max_bytes, deadline, clock)
    finally:
        response.release_conn()
        pool.close()


def _body(
    checked: Target,
    response: urllib3.BaseHTTPResponse,
    expected_sha256: str,
    max_bytes: int,
    deadline: float,
    clock: Callable[[], float],
) -> bytes:
    status = response.status
    if 300 <= status < 400:
        raise FetchRefused(
            f"{checked.host} answered with a redirect (HTTP {status}); none is followed"
        )
    if status >= 500 or status == 429:
        raise SourceUnreachable(f"{checked.host} answered HTTP {status}")
    if status != 200:
        raise ArtifactMissing(f"{checked.host} did not serve the result (HTTP {status})")
    declared = response.headers.get("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise ArtifactTooLarge(f"result is over the {max_bytes}-byte limit")
    digest, received = hashlib.sha256(), bytearray()
    try:
        # read1: whatever has arrived, so a sender trickling bytes meets the deadline check
        # after each receive instead of filling a whole chunk first.
        while chunk := response.read1(CHUNK):
            received += chunk
            if len(received) > max_bytes:
                raise ArtifactTooLarge(f"result is over the {max_bytes}-byte limit")
            if clock() > deadline:
                raise SourceUnreachable(f"{checked.host} did not send the result in time")
    except urllib3.exceptions.HTTPError as error:
        raise SourceUnreachable(f"{checked.host} broke off: {type(error).__name__}") from None
    digest.update(received)
    if digest.hexdigest() != expected_sha256:
        raise DigestMismatch("the result at its link does not match its committed sha256")
    return bytes(received)
