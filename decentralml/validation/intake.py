"""Where the creator reads each result, and how: one home for that rule.

A result reaches the creator one of two ways (docs/security.md, "Who can write a result"):

- **uploaded** into the task's ``results/`` folder of the creator's storage. Only that place
  is read (a record naming anywhere else is refused unread), but whoever holds write access
  there can overwrite or delete anyone's result: it suits one machine or a trusted team, and
  a creator turns it off with ``storage.accept_uploads: false``;
- **hosted** by its contributor, in storage only the contributor can write, behind a link it
  commits in its record. The creator pulls it through ``decentralml.io.fetcher`` (the schemes
  and hosts it allows, bounded, no redirects) once, checks it against the committed digest,
  and keeps a content-addressed copy in its own storage, which it reads from then on (so a
  later review does not depend on the contributor's host, and a copy holds only committed
  bytes: something else at that name fails its digest and is pulled again).

A hosted result whose place does not answer through the pull's retries is the contributor's
loss (rejected, with the reason), not deferred: a deferred result is paid by the marketplace at
expiry + grace, which would pay a link that never answers.
"""

from __future__ import annotations

from dataclasses import dataclass

from decentralml.io.fetcher import PullPolicy, pull
from decentralml.io.storage import ArtifactStore
from decentralml.protocol import layout
from decentralml.protocol.errors import ArtifactMissing, DigestMismatch
from decentralml.protocol.records import Submission

NOT_READ = ""
"""The location of a result the creator does not read: it never equals a recorded path."""


@dataclass(frozen=True)
class ResultIntake:
    """The creator's reads of one task's results. ``pull_policy`` None: hosted results are
    refused; ``accept_uploads`` False: uploaded ones are."""

    store: ArtifactStore
    global_weights_url: str
    max_bytes: int
    pull_policy: PullPolicy | None = None
    accept_uploads: bool = True

    def place(self, submission_id: int) -> str:
        """The upload place the task's layout assigns a submission."""
        return layout.result_url(self.global_weights_url, submission_id)

    def location(self, submission: Submission) -> str:
        """Where ``submission``'s result is read: its upload place, or the link it committed
        when the creator pulls from such links. Anything else is refused unread
        (``refusal_before_reading`` compares this with the recorded path)."""
        recorded = submission.result.result_path if submission.result else ""
        if recorded == self.place(submission.submission_id):
            return recorded if self.accept_uploads else NOT_READ
        if self.pulls(recorded):
            return recorded
        return self.place(submission.submission_id) if self.accept_uploads else NOT_READ

    def pulls(self, url: str) -> bool:
        """Whether ``url`` is a link this creator pulls (its scheme allowed, not a place in
        its own storage): whether to pull it at all is decided here; the link's host and
        addresses are checked by the fetcher, with reasons."""
        if self.pull_policy is None or self.store.holds(url):
            return False
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        return scheme in self.pull_policy.schemes

    def read(self, url: str, sha256: str) -> bytes:
        """The verified bytes of the result at ``url`` (a ``location``)."""
        if self.store.holds(url):
            return self.store.get(url, sha256, self.max_bytes)
        assert self.pull_policy is not None  # location() gives no other link
        copy = layout.pulled_result_url(self.global_weights_url, sha256)
        try:
            return self.store.get(copy, sha256, self.max_bytes)
        except (ArtifactMissing, DigestMismatch):
            pass  # not pulled yet, or something else lies at the copy's name
        data = pull(url, sha256, self.max_bytes, self.pull_policy)
        self.store.put(copy, data)  # only bytes that matched the commitment are written
        return data
