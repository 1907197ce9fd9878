"""A loaded config checked against this machine: what pydantic (decentralml/runtime/config.py)
cannot know on its own. Is the model registered, does the custom validator import, does fsspec know
the storage protocol, can the marketplace and storage folders be written, does a self-hosted S3
accept our credentials, does the decisions file exist, does the demo have a slot for each of
its contributors, does its Dask scheduler answer?

Every command runs the checks for the parts it uses right after it loads its config, before
it opens a marketplace or publishes anything: a bad value is one line naming its field, not a
traceback, and never a task found broken after a round's wait.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

from decentralml.io.storage import check_protocol, normalize_url
from decentralml.protocol.errors import ConfigError, StorageCredentialsError
from decentralml.protocol.records import ValidationStrategy
from decentralml.runtime.config import RunConfig, format_problems

Problem = tuple[str, str]
"""(dotted field path, what is wrong with it and what to do)."""

Check = Callable[[RunConfig], Iterator[Problem]]

_SQLITE_HEADER = b"SQLite format 3\x00"


def model_registered(config: RunConfig) -> Iterator[Problem]:
    """The workload is built in or imports (a creator's own ``module:attribute``), its
    primary metric is one the evaluation computes, and the data source, if named, is its
    dataset."""
    from decentralml.ml import models, workloads

    field = "workload" if config.workload else "model.name"
    name = config.workload_name
    try:
        workload = workloads.get(name)
    except ConfigError as error:
        yield field, str(error)
        return
    if workload.primary_metric not in models.SCORES:
        yield (
            field,
            f"workload {name!r} names primary metric {workload.primary_metric!r}, which the "
            f"evaluation does not compute (it computes: {', '.join(models.SCORES)})",
        )
    source = config.data.source
    if source is not None and source != workload.dataset.name:
        yield (
            "data.source",
            f"{source!r} is not the data of workload {name!r} ({workload.dataset.name!r}); "
            "remove data.source or set it to that",
        )


def custom_validator_loads(config: RunConfig) -> Iterator[Problem]:
    """Imported here, as the round will import it: a module that fails to load fails now."""
    task = config.task
    if task.validation_strategy is not ValidationStrategy.CustomAccept or not task.custom_validator:
        return
    from decentralml.validation.custom import load_function

    try:
        load_function(task.custom_validator)
    except ConfigError as error:
        yield "task.custom_validator", str(error)


def decisions_file_readable(config: RunConfig) -> Iterator[Problem]:
    """ManualAccept with a decisions file: the file exists and parses. Not for ``publish``:
    there the file may be written after the results are seen, before ``round`` runs."""
    task = config.task
    if task.validation_strategy is not ValidationStrategy.ManualAccept or not task.manual_decisions:
        return
    from decentralml.validation.manual import decisions_from_file

    try:
        decisions_from_file(task.manual_decisions)
    except ConfigError as error:
        yield "task.manual_decisions", str(error)


def demo_slots_fit(config: RunConfig) -> Iterator[Problem]:
    """The demo simulates ``contributors`` agents on tasks of ``task.max_assignments`` slots;
    an agent without a slot never works and is never paid. (Elsewhere more contributors than
    slots is normal: the fastest take the slots.)"""
    slots = config.task.max_assignments
    if config.contributors > slots:
        yield (
            "contributors",
            (
                f"{config.contributors} simulated contributors but task.max_assignments is "
                f"{slots}: {config.contributors - slots} would never get a slot; lower "
                "contributors, raise task.max_assignments, or pass --contributors N (sets both)"
            ),
        )


def dask_scheduler_answers(config: RunConfig) -> Iterator[Problem]:
    """A configured Dask scheduler accepts a connection: tried before TensorFlow loads and the
    creator publishes (flows/simulation.py then checks its workers)."""
    simulation = config.simulation
    if simulation.runner != "dask" or simulation.address is None:
        return
    host, _, port = simulation.address.split("://")[-1].rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        yield (
            "simulation.address",
            f"no Dask scheduler answers at {simulation.address} ({reason}); start one "
            "(`dask scheduler`) or set simulation.address to null for a LocalCluster",
        )


def storage_protocol_known(config: RunConfig) -> Iterator[Problem]:
    try:
        check_protocol(normalize_url(config.storage.url))
    except ConfigError as error:
        yield "storage.url", str(error)


def storage_root_writable(config: RunConfig) -> Iterator[Problem]:
    """A file:// root must be creatable and writable; remote roots are not contacted."""
    url = normalize_url(config.storage.url)
    if not url.startswith("file://"):
        return
    problem = _folder_problem(Path(unquote(urlparse(url).path)))
    if problem:
        yield "storage.url", problem


def storage_credentials_accepted(config: RunConfig) -> Iterator[Problem]:
    """An s3:// root at a configured ``storage.endpoint_url`` (self-hosted S3, on the same
    network) gets one request, so credentials that are missing or refused fail here, in one
    line. AWS itself is not contacted by a check; there the first upload fails the same way,
    still before any task is published."""
    storage = config.storage
    if not (storage.endpoint_url and normalize_url(storage.url).startswith("s3://")):
        return
    from decentralml.runtime.backends import open_store

    try:
        open_store(storage).check_access()
    except StorageCredentialsError as error:
        yield "storage.url", str(error)


def results_store_accepts(config: RunConfig) -> Iterator[Problem]:
    """A contributor hosting its results (``contributor.results_url``) at a configured S3
    endpoint: its own credentials are tried once now, so a refusal is one line before any
    slot is paid for, not an upload failing after the training."""
    url = config.contributor.results_url
    endpoint = config.contributor.results_endpoint_url or config.storage.endpoint_url
    if not (url and endpoint):
        return
    from decentralml.io.storage import ArtifactStore

    try:
        ArtifactStore(url, endpoint).check_access()
    except StorageCredentialsError as error:
        yield "contributor.results_url", str(error)


def _key_problem(config: RunConfig, role: str) -> Iterator[Problem]:
    """The party's key is in the environment, or a dev key may sign here (a dev marketplace:
    runtime.backends.dev_problem; a chain is asked for its genesis only when the config
    declares a dev chain)."""
    from decentralml.runtime.backends import dev_problem

    marketplace = config.marketplace
    variable = getattr(marketplace, f"{role}_key_env")
    if os.environ.get(variable):
        return
    chain = None
    if (
        marketplace.backend == "substrate"
        and marketplace.dev_accounts
        and marketplace.dev_genesis_hash
    ):
        from decentralml.chain.client import ChainClient

        try:
            chain = ChainClient(marketplace.url)
        except Exception as error:  # the chain's own refusal, named; no traceback
            yield "marketplace.url", f"{marketplace.url} cannot be reached: {error}"
            return
    try:
        problem = dev_problem(marketplace, chain)
    finally:
        if chain is not None:
            chain.close()
    if problem:
        yield variable, f"set it to the {role}'s secret URI or mnemonic ({problem})"


def contributor_key_known(config: RunConfig) -> Iterator[Problem]:
    yield from _key_problem(config, "contributor")


def creator_key_known(config: RunConfig) -> Iterator[Problem]:
    yield from _key_problem(config, "creator")


def marketplace_writable(config: RunConfig) -> Iterator[Problem]:
    """The backend's own SQLite file (the embedded marketplace, or the chain's index) can be
    created in a writable folder, or is already a SQLite file."""
    from decentralml.runtime.backends import marketplace_file

    field, path = marketplace_file(config.marketplace)
    problem = _sqlite_file_problem(Path(path))
    if problem:
        yield field, problem


def _folder_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot hold new files, or None. Tried for real (create the folder, write
    and delete a file): permission bits say nothing for root, read-only mounts or ACLs."""
    in_the_way = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if in_the_way is not None and not in_the_way.is_dir():
        return f"{in_the_way} is a file, so folder {folder} cannot be created; pick another"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".decentralml-probe-"):
            pass
    except OSError as error:
        reason = error.strerror or str(error)
        return f"folder {folder} cannot be created or written ({reason}); pick a writable folder"
    return None


def _sqlite_file_problem(path: Path) -> str | None:
    if path.is_dir():
        return f"{path} is a folder; name a file in it, e.g. {path / 'marketplace.sqlite'}"
    try:
        if path.is_file() and path.stat().st_size > 0:
            with path.open("rb") as handle:
                if handle.read(len(_SQLITE_HEADER)) != _SQLITE_HEADER:
                    return f"{path} is not a SQLite file; name a new file or the existing one"
    except OSError as error:
        return f"{path} cannot be read ({error.strerror or error})"
    return _folder_problem(path.parent)


READ: tuple[Check, ...] = (marketplace_writable,)
"""tasks, results, balance: only the marketplace is opened."""

CONTRIBUTE: tuple[Check, ...] = (
    storage_protocol_known,
    storage_credentials_accepted,
    results_store_accepts,
    marketplace_writable,
    contributor_key_known,
)
"""contribute: a contributor writes its results next to the task's files, not to its root, and
reaches them at the endpoint the task names; a storage it configured itself is checked too."""

PUBLISH: tuple[Check, ...] = (
    model_registered,
    custom_validator_loads,
    storage_protocol_known,
    storage_root_writable,
    storage_credentials_accepted,
    marketplace_writable,
    creator_key_known,
)
"""publish: everything its later round needs except the decisions file."""

CREATE: tuple[Check, ...] = (decisions_file_readable, *PUBLISH)
"""train and round: publish's checks and the decisions file."""

DEMO: tuple[Check, ...] = (demo_slots_fit, dask_scheduler_answers, *CREATE)
"""demo: the creator's checks, a slot for every simulated contributor and their scheduler."""


def check_config(
    config: RunConfig, checks: Iterable[Check] = DEMO, source: str = "<config>"
) -> RunConfig:
    """Run ``checks``; refuse with one ConfigError listing every problem, one line each."""
    problems = [problem for check in checks for problem in check(config)]
    if problems:
        raise ConfigError(format_problems(source, problems))
    return config
