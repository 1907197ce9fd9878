"""The hardened pull of a contributor-hosted result (decentralml.io.fetcher), against a real
HTTP server on 127.0.0.1 that records what it was asked. Names that must resolve elsewhere
(a metadata address, a private network) go through an injected resolver: those are refused
before any connection, so nothing leaves the machine."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from decentralml.io.fetcher import PullPolicy, public, pull, target
from decentralml.io.storage import Retries, sha256_hex
from decentralml.protocol.errors import (
    ArtifactMissing,
    ArtifactTooLarge,
    DigestMismatch,
    FetchRefused,
    SourceUnreachable,
)
from tests.http_site import Site, serving

BODY = b"safetensors bytes of an honest result" * 100
NO_WAIT = Retries(attempts=3, delays=(0.0,))


@pytest.fixture
def site() -> Iterator[Site]:
    with serving() as served:
        yield served


def local(**changes: object) -> PullPolicy:
    """The policy a test uses: http, 127.0.0.1 allowed on purpose, no waiting between tries."""
    base = {"schemes": ("http",), "private_hosts": ("127.0.0.1",), "retries": NO_WAIT}
    return PullPolicy(**{**base, **changes})


def test_a_hosted_result_is_pulled_and_checked(site: Site) -> None:
    site.routes["/r.safetensors?X-Amz-Signature=abc"] = (200, {}, [BODY])
    data = pull(site.url("/r.safetensors?X-Amz-Signature=abc"), sha256_hex(BODY), 10**6, local())
    assert data == BODY
    assert site.asked == [("/r.safetensors?X-Amz-Signature=abc", f"127.0.0.1:{site.port}")]


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.7", "private"),
        ("169.254.169.254", "cloud metadata (link-local)"),
        ("::1", "IPv6 loopback"),
        ("fd00:ec2::254", "IPv6 metadata (unique local)"),
        ("::ffff:127.0.0.1", "IPv4-mapped loopback"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
    ],
)
def test_a_link_to_a_non_public_address_is_refused_before_connecting(
    site: Site, address: str, kind: str
) -> None:
    policy = local(private_hosts=())
    with pytest.raises(FetchRefused, match="resolves to a non-public address"):
        pull("http://results.example/r", "0" * 64, 10**6, policy, resolver=lambda h, p: [address])
    assert not public(address), kind
    assert site.asked == []


def test_loopback_is_refused_unless_the_creator_allows_it(site: Site) -> None:
    site.routes["/r"] = (200, {}, [BODY])
    with pytest.raises(FetchRefused, match="non-public"):
        pull(site.url("/r"), sha256_hex(BODY), 10**6, local(private_hosts=()))
    assert site.asked == []


def test_a_name_is_resolved_once_and_the_checked_address_is_the_one_connected(site: Site) -> None:
    """No second lookup (DNS rebinding): the connection goes to the address that was checked,
    and the request still names the host the link named."""
    site.routes["/r"] = (200, {}, [BODY])
    lookups: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]

    policy = local(private_hosts=("results.example",))
    url = site.url("/r", host="results.example")
    assert pull(url, sha256_hex(BODY), 10**6, policy, resolver=resolver) == BODY
    assert lookups == ["results.example"]
    assert site.asked == [("/r", f"results.example:{site.port}")]


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("file:///etc/passwd", "scheme 'file' is not allowed"),
        ("s3://bucket/key", "scheme 's3' is not allowed"),
        ("ftp://results.example/r", "scheme 'ftp' is not allowed"),
        ("https://results.example/r", "scheme 'https' is not allowed"),  # policy: http only
        ("http://user:pw@results.example/r", "carries a user name or password"),
        ("http:///r", "names no host"),
        ("http://results.example:99999/r", "not a valid URL"),
    ],
)
def test_a_link_the_creator_does_not_follow_is_refused(url: str, why: str) -> None:
    with pytest.raises(FetchRefused, match=why):
        target(url, local(), resolver=lambda h, p: ["93.184.216.34"])


def test_a_redirect_is_not_followed(site: Site) -> None:
    site.routes["/r"] = (302, {"Location": "/secret"}, [b""])
    site.routes["/secret"] = (200, {}, [BODY])
    with pytest.raises(FetchRefused, match="redirect"):
        pull(site.url("/r"), sha256_hex(BODY), 10**6, local())
    assert [path for path, _ in site.asked] == ["/r"]


def test_a_declared_length_over_the_bound_is_refused_unread(site: Site) -> None:
    site.routes["/r"] = (200, {"Content-Length": str(10**9)}, [b"x" * 10])
    with pytest.raises(ArtifactTooLarge):
        pull(site.url("/r"), "0" * 64, 1000, local())


def test_an_undeclared_length_is_bounded_by_the_read(site: Site) -> None:
    chunks = [b"x" * 600] * 5  # 3000 bytes, chunked: no length declared
    site.routes["/r"] = (200, {"Transfer-Encoding": "chunked"}, chunks)
    with pytest.raises(ArtifactTooLarge):
        pull(site.url("/r"), "0" * 64, 1000, local())


def test_bytes_other_than_the_committed_ones_are_refused(site: Site) -> None:
    site.routes["/r"] = (200, {}, [BODY + b"!"])
    with pytest.raises(DigestMismatch):
        pull(site.url("/r"), sha256_hex(BODY), 10**6, local())


def test_a_missing_result_is_missing(site: Site) -> None:
    with pytest.raises(ArtifactMissing, match="HTTP 404"):
        pull(site.url("/gone"), "0" * 64, 10**6, local())
    assert len(site.asked) == 1  # a final answer, not retried


def test_a_place_that_does_not_answer_is_retried_then_unreachable(site: Site) -> None:
    site.routes["/r"] = (503, {}, [b"busy"])
    with pytest.raises(SourceUnreachable, match="HTTP 503"):
        pull(site.url("/r"), "0" * 64, 10**6, local())
    assert len(site.asked) == 3


def test_a_closed_port_is_unreachable_not_a_crash() -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(SourceUnreachable, match="did not answer"):
        pull(f"http://127.0.0.1:{port}/r", "0" * 64, 10**6, local())


def test_a_trickling_sender_meets_the_deadline(site: Site) -> None:
    """The pull is bounded in all, not only per read: the injected clock passes the deadline
    after the first bytes arrive, and the pull stops there."""
    site.routes["/r"] = (200, {"Transfer-Encoding": "chunked"}, [b"x" * 10] * 50)
    ticks = iter([0.0] + [1e6] * 100)
    with pytest.raises(SourceUnreachable, match="in time"):
        pull(site.url("/r"), "0" * 64, 10**6, local(retries=Retries(1)), clock=lambda: next(ticks))
