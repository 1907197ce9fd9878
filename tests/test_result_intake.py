"""Where the creator reads each result (decentralml.validation.intake), through the real
``Judge`` over real storage and a real HTTP server: a contributor-hosted result is pulled
once, checked against its commitment and kept as the creator's own copy; uploads can be
turned off; a link the creator does not follow is refused unread, and one whose place does
not answer is the contributor's loss, not a deferral the marketplace would later pay."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from decentralml.io.fetcher import PullPolicy
from decentralml.io.storage import ArtifactStore, Retries, sha256_hex
from decentralml.io.weights import encode, layout_of
from decentralml.protocol import layout
from decentralml.protocol.records import ResultSubmissionStatus, Submission, TaskResult
from decentralml.validation import AutoAccept, Judge, ScreeningRules
from decentralml.validation.intake import ResultIntake
from tests.http_site import Site, serving

GLOBAL = {"000.kernel": np.zeros((6, 4), np.float32), "001.bias": np.zeros(4, np.float32)}
POLICY = PullPolicy(schemes=("http",), private_hosts=("127.0.0.1",), retries=Retries(2, (0.0,)))


@pytest.fixture
def site() -> Iterator[Site]:
    with serving() as served:
        yield served


def weights(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    tensors = {n: rng.normal(0, 0.1, t.shape).astype(t.dtype) for n, t in GLOBAL.items()}
    return encode(tensors, {"num_examples": 100})


class Creator:
    """A creator's storage (local files) holding one round's global weights."""

    def __init__(self, root: Path, **intake: object) -> None:
        self.store = ArtifactStore(f"file://{root}")
        self.global_url = self.store.round_url("run", 1, "global.safetensors")
        self.store.put(self.global_url, encode(GLOBAL))
        self.intake = ResultIntake(self.store, self.global_url, 10**6, **intake)

    def submission(self, sid: int, path: str, data: bytes) -> Submission:
        result = TaskResult(path, sha256_hex(data), 100)
        status = ResultSubmissionStatus.PendingValidation
        return Submission(sid, 1, f"w{sid}", status, 0, result, commit_order=sid)

    def review(self, *submissions: Submission) -> dict[int, tuple[bool, str]]:
        judge = Judge(
            fetch=self.intake.read,
            result_location=self.intake.location,
            layout=layout_of(GLOBAL),
            global_tensors=GLOBAL,
            max_bytes=10**6,
            policy=AutoAccept(),
            evaluate=None,
            rules=ScreeningRules(copy_threshold=0.0),
        )
        return {
            d.submission_id: (d.verdict.accept, d.verdict.reason)
            for d in judge.review(submissions)
            if d.verdict is not None
        }


def test_a_hosted_result_is_pulled_once_and_read_from_the_creators_copy(
    tmp_path: Path, site: Site
) -> None:
    data = weights(1)
    site.routes["/alice/task-0/submission-0.safetensors?sig=1"] = (200, {}, [data])
    creator = Creator(tmp_path / "creator", pull_policy=POLICY)
    hosted = creator.submission(0, site.url("/alice/task-0/submission-0.safetensors?sig=1"), data)
    assert creator.review(hosted) == {0: (True, "passed integrity checks")}
    copy = layout.pulled_result_url(creator.global_url, sha256_hex(data))
    assert creator.store.get(copy) == data
    site.routes.clear()  # the contributor's host is gone: the copy is enough
    assert creator.review(hosted)[0][0] is True
    assert len(site.asked) == 1


def test_something_else_at_the_copys_name_is_pulled_over(tmp_path: Path, site: Site) -> None:
    """A party with write access to the creator's storage puts other bytes where the copy
    goes (or a link there): they fail the digest, and the committed bytes are pulled again."""
    data = weights(2)
    site.routes["/r"] = (200, {}, [data])
    creator = Creator(tmp_path / "creator", pull_policy=POLICY)
    copy = layout.pulled_result_url(creator.global_url, sha256_hex(data))
    creator.store.put(copy, weights(3))
    reviewed = creator.review(creator.submission(0, site.url("/r"), data))
    assert reviewed == {0: (True, "passed integrity checks")}
    assert creator.store.get(copy) == data


def test_with_uploads_off_an_uploaded_result_is_refused_unread(tmp_path: Path, site: Site) -> None:
    data = weights(4)
    creator = Creator(tmp_path / "creator", pull_policy=POLICY, accept_uploads=False)
    place = creator.intake.place(0)
    creator.store.put(place, data)
    (Path(place.removeprefix("file://"))).chmod(0)  # a read would fail: it must not happen
    accepted, reason = creator.review(creator.submission(0, place, data))[0]
    assert not accepted and "it was not read" in reason


def test_a_link_the_creator_does_not_pull_is_refused_unread(tmp_path: Path) -> None:
    data = weights(5)
    creator = Creator(tmp_path / "creator", pull_policy=POLICY)
    for sid, link in enumerate(["file:///etc/passwd", "https://results.example/r"]):
        accepted, reason = creator.review(creator.submission(sid, link, data))[sid]
        assert not accepted and "it was not read" in reason


def test_without_a_pull_policy_no_link_is_followed(tmp_path: Path, site: Site) -> None:
    data = weights(6)
    site.routes["/r"] = (200, {}, [data])
    creator = Creator(tmp_path / "creator")
    accepted, reason = creator.review(creator.submission(0, site.url("/r"), data))[0]
    assert not accepted and "it was not read" in reason and site.asked == []


@pytest.mark.parametrize(
    ("route", "policy", "why"),
    [
        (None, POLICY, "no result file is stored"),
        ((503, {}, [b"busy"]), POLICY, "answered HTTP 503"),
        ((200, {}, [b"other bytes"]), POLICY, "does not match its recorded sha256"),
        ((200, {}, [b"x"]), PullPolicy(schemes=("http",)), "resolves to a non-public address"),
    ],
)
def test_a_hosted_result_that_cannot_be_pulled_is_rejected_with_its_reason(
    tmp_path: Path, site: Site, route, policy, why
) -> None:
    data = weights(7)
    if route is not None:
        site.routes["/r"] = route
    creator = Creator(tmp_path / "creator", pull_policy=policy)
    accepted, reason = creator.review(creator.submission(0, site.url("/r"), data))[0]
    assert not accepted and why in reason
    assert str(tmp_path) not in reason  # nothing of the creator's machine is published
