"""Typed errors. Each message says what was wrong and, where it helps, what to do next."""


class DecentralMLError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(DecentralMLError):
    """A configuration file or value is invalid; the message names the field path."""


class MarketplaceError(DecentralMLError):
    """A marketplace rule refused an operation. Nothing was changed."""


class UnknownTask(MarketplaceError):
    pass


class UnknownSubmission(MarketplaceError):
    pass


class InvalidTaskSpec(MarketplaceError):
    pass


class InsufficientBalance(MarketplaceError):
    pass


class TaskNotOpen(MarketplaceError):
    """The task is closed, completed or past its expiration block."""


class TaskFull(MarketplaceError):
    """Every one of the task's max_assignments slots is taken."""


class AlreadyAssigned(MarketplaceError):
    """A contributor holds at most one slot per task."""


class TooLittleReputation(MarketplaceError):
    """The task asks a minimum reputation (``TaskSpec.min_reputation``) the worker lacks."""


class NotAssignee(MarketplaceError):
    """Only the contributor the submission was assigned to may send its result."""


class InvalidResult(MarketplaceError):
    """A result record's numbers cannot be used (non-positive examples, non-finite metrics)."""


class ResultAlreadySent(MarketplaceError):
    pass


class AlreadyCommitted(MarketplaceError):
    """A submission takes one commitment; only an identical repeat is accepted (a no-op)."""


class NotCommitted(MarketplaceError):
    """A result is accepted only after the assignee committed to it (commit_result)."""


class NotCreator(MarketplaceError):
    """Only the task's creator may give verdicts or close it."""


class VerdictAlreadyGiven(MarketplaceError):
    pass


class InvalidAmount(MarketplaceError):
    """An accept's amount is not one the task's payment rule allows (another amount on a
    ``per_result`` task; a negative one, or amounts adding up to more than the reward)."""


class NoResultYet(MarketplaceError):
    """A verdict needs a result: the submission is still Assigned."""


class PendingResults(MarketplaceError):
    """The task still has results waiting for a verdict; settle them before closing."""


class CreatorCannotPay(MarketplaceError):
    """The creator's free balance does not cover the rewards it has promised and not paid:
    on a chain without escrow, a contributor should not work for it."""


class ChainError(MarketplaceError):
    """An extrinsic failed on chain; the message carries the module error name."""


class ChainOutcomeUnknown(ChainError):
    """A submitted extrinsic's fate is not known: the connection dropped, it was not included
    before the deadline, or it left the pool without being included. It is NOT a refusal:
    read the chain back (the marketplace does) and submit again only if the record is neither
    on chain nor pending. ``tasks/policy.py`` retries it although it is a ChainError (so also a
    MarketplaceError, for callers that catch those).

    ``extrinsic_hash`` and ``nonce`` name the submission when known; ``pending`` is True when
    it was still in the pool (it may yet land)."""

    def __init__(
        self,
        message: str,
        *,
        extrinsic_hash: str | None = None,
        nonce: int | None = None,
        pending: bool = False,
    ) -> None:
        super().__init__(message)
        self.extrinsic_hash = extrinsic_hash
        self.nonce = nonce
        self.pending = pending


class TaskRefused(DecentralMLError):
    """A contributor declines a task before paying anything for it: the record, the package's
    settings or the creator fail the contributor's checks. Nothing was assigned."""


class StorageError(DecentralMLError):
    """An artifact is missing, unreadable, or its digest does not match the record.

    Two kinds below: what is stored is wrong (ArtifactMissing, ArtifactTooLarge,
    DigestMismatch: the writer's fault, reading again changes nothing) and the storage could
    not be used (StorageUnavailable: the reader's side; try again later; or
    StorageCredentialsError: this party's credentials are missing or refused; fix them)."""


class ArtifactMissing(StorageError):
    """Nothing is stored where the artifact must be."""


class ArtifactTooLarge(StorageError):
    """The artifact is bigger than anything honest could be; it was not read."""


class DigestMismatch(StorageError):
    """The stored bytes are not the ones whose sha256 was recorded: two reads gave the same
    wrong digest, so it is what is stored, not damage on the way."""


class StorageUnavailable(StorageError):
    """The storage could not be read or written (a connection refused, a timeout, an I/O
    error), or two reads of one artifact gave different bytes: nothing is known about what
    is stored. Transient or on the reader's side: retry later, never blame the writer."""


class StorageCredentialsError(StorageError):
    """S3 storage found no credentials in this party's environment, or refused the ones it
    found. Not transient: retrying repeats the refusal until the environment is fixed. The
    message names the variables to set and never their values."""


class IntegrityError(DecentralMLError):
    """A contributor's weights do not fit the creator's model (names, shapes, dtypes, values)."""


class DataError(DecentralMLError):
    """The dataset cannot be found or does not have the expected content."""


class FetchRefused(StorageError):
    """A result link the creator does not follow (its scheme, a user name in it, a host that
    resolves to a non-public address, a redirect): nothing more was requested."""


class SourceUnreachable(StorageError):
    """A contributor-hosted result's place did not answer (refused, timed out, an HTTP 5xx)
    through the pull's retries: the contributor's hosting, not the creator's storage."""
