"""The seed's functions (decentralml/<name>.py), with the seed's parameter names, end to end
over the embedded marketplace and over a SubstrateInterface on the local chain."""

from __future__ import annotations

import functools
import sqlite3

import numpy as np
import pytest
from substrateinterface import SubstrateInterface

from decentralml.accept_task_results import accept_task_results
from decentralml.api.seed import as_marketplace
from decentralml.assign_task import assign_task
from decentralml.create_task import create_task_model_contributor
from decentralml.creator import task_settings
from decentralml.io.packaging import build_package
from decentralml.io.storage import ArtifactStore, sha256_hex
from decentralml.io.weights import encode
from decentralml.list_task_results import list_task_results
from decentralml.list_tasks import list_tasks
from decentralml.marketplace.embedded import EmbeddedMarketplace
from decentralml.protocol.accounts import dev_keypair, keypair_from_uri
from decentralml.protocol.commitment import result_commitment
from decentralml.protocol.errors import TaskRefused
from decentralml.protocol.records import ResultSubmissionStatus, TaskResult, Verdict
from decentralml.reject_task_results import reject_task_results
from decentralml.runtime.backends import DEFAULT_ASSETS
from decentralml.runtime.config import parse_config
from decentralml.send_task_result import send_task_result
from decentralml.validate_task_results import validate_task_results

SECRET = "AKIA-not-to-be-stored"
CONFIG = parse_config({})


@functools.cache
def global_tensors() -> dict[str, np.ndarray]:
    """The seed model's weights: what a real task ships."""
    from decentralml.ml.models import build_model, model_tensors

    return model_tensors(build_model("mnist_mlp", CONFIG.training.learning_rate))


def publish_assets(root: str, settings: dict | None = None) -> tuple[str, str, str]:
    store = ArtifactStore(root)
    settings = task_settings(CONFIG).dump() if settings is None else settings
    assets = store.put(store.url_for("assets.tar.gz"), build_package(DEFAULT_ASSETS, settings))
    weights = store.put(store.url_for("global.safetensors"), encode(global_tensors()))
    return assets.url, weights.url, weights.sha256


def create(substrate, root: str, slots: int = 2, settings: dict | None = None) -> int:
    assets_url, weights_url, weights_sha = publish_assets(root, settings)
    return create_task_model_contributor(
        expiration_block=10_000,
        substrate=substrate,
        sudoaccount="//Alice",
        passphrase=None,
        task_type="ModelContributor",
        question="train mnist",
        pays_amount=2 * 10**12,
        max_assignments=slots,
        validation_strategy="AutoAccept",
        model_contributor_script_path=assets_url,
        model_contributor_script_storage_type="S3",
        model_contributor_script_storage_credentials={"secret": SECRET},
        global_weights_path=weights_url,
        global_weights_sha256=weights_sha,
    )


def contribute(substrate, task_id: int, worker: str, tmp_path, value: float) -> int:
    sid = assign_task(substrate, worker, None, task_id, download_dir=tmp_path / worker.strip("/"))
    assert (tmp_path / worker.strip("/") / "start_task.sh").exists()  # assets downloaded
    weights = tmp_path / f"{worker.strip('/')}.safetensors"
    weights.write_bytes(encode({k: np.full_like(v, value) for k, v in global_tensors().items()}))
    send_task_result(substrate, worker, sid, {"num_examples": 50}, weights, "S3", {"key": SECRET})
    return sid


def test_seed_assign_checks_the_task_before_it_takes_a_slot(tmp_path):
    """The seed's assign_task used to take (and on a chain pay for) a slot first and check
    nothing: a package whose settings no contributor can follow now costs no slot."""
    market = EmbeddedMarketplace(tmp_path / "m.sqlite")
    market.fund(dev_keypair("Alice").ss58_address, 10**13)
    task_id = create(market, f"memory://seed-bad-{tmp_path.name}", settings={"x": 1})
    with pytest.raises(TaskRefused, match="task settings refused"):
        assign_task(market, "//Bob", None, task_id, download_dir=tmp_path / "Bob")
    assert list_task_results(market, task_id) == []


def test_seed_api_on_the_embedded_marketplace(tmp_path):
    market = EmbeddedMarketplace(tmp_path / "m.sqlite")
    market.fund(dev_keypair("Alice").ss58_address, 10**13)
    task_id = create(market, f"memory://seed-{tmp_path.name}")
    assert [t.task_id for t in list_tasks(market)] == [task_id]

    good = contribute(market, task_id, "//Bob", tmp_path, 1.0)
    bad = contribute(market, task_id, "//Charlie", tmp_path, np.nan)
    verdicts = {v.submission_id: v for v in validate_task_results(market, task_id)}
    assert verdicts[good].accept and not verdicts[bad].accept
    assert "NaN" in verdicts[bad].reason

    assert accept_task_results(market, "//Alice", None, [good]) == {good: 10**12}
    assert accept_task_results(market, "//Alice", None, good) == {good: 0}  # paid once
    reject_task_results(market, "//Alice", None, [bad], verdicts[bad].reason)
    statuses = {s.submission_id: s.status for s in list_task_results(market, task_id)}
    assert statuses == {good: ResultSubmissionStatus.Accepted, bad: ResultSubmissionStatus.Rejected}
    assert market.balance(dev_keypair("Bob").ss58_address) == 10**12

    dump = "\n".join(sqlite3.connect(tmp_path / "m.sqlite").iterdump())
    assert SECRET not in dump  # credentials are accepted, never stored


@pytest.mark.integration
@pytest.mark.slow
def test_seed_api_accepts_a_substrate_interface(chain_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default index lives in ./.decentralml
    substrate = SubstrateInterface(url=chain_url, ss58_format=42)
    task_id = create(substrate, (tmp_path / "storage").as_uri(), slots=1)
    assert task_id in [t.task_id for t in list_tasks(substrate)]
    sid = contribute(substrate, task_id, "//Dave", tmp_path, 2.0)
    [verdict] = validate_task_results(substrate, task_id)
    assert verdict.accept
    assert accept_task_results(substrate, "//Alice", None, [sid]) == {sid: 2 * 10**12}
    [submission] = list_task_results(substrate, task_id)
    assert submission.status is ResultSubmissionStatus.Accepted


def hostile_round(substrate, tmp_path, root: str) -> tuple[int, dict[str, int]]:
    """One honest result and three hostile ones, sent through the seed API (or, for a record
    the API would never write, straight to the marketplace as an attacker would)."""
    task_id = create(substrate, root, slots=4)
    sids = {"honest": contribute(substrate, task_id, "//Bob", tmp_path, 1.0)}
    copied = tmp_path / "Bob.safetensors"  # Bob's own file, sent again by Charlie
    sid = assign_task(substrate, "//Charlie", None, task_id, download_dir=tmp_path / "Charlie")
    send_task_result(substrate, "//Charlie", sid, {"num_examples": 50}, copied)
    sids["copy"] = sid
    sids["unchanged"] = contribute(substrate, task_id, "//Dave", tmp_path, 0.0)
    eve = keypair_from_uri("//Eve")
    market = as_marketplace(substrate)
    sid = market.assign_task(eve, task_id)
    digest = sha256_hex(b"anything")
    market.commit_result(eve, sid, result_commitment(eve.ss58_address, digest))
    market.send_task_result(eve, sid, TaskResult("file:///etc/hostname", digest, 50))
    sids["elsewhere"] = sid
    return task_id, sids


def assert_hostile_results_refused(verdicts: dict[int, Verdict], sids: dict[str, int]) -> None:
    assert verdicts[sids["honest"]].accept
    assert verdicts[sids["copy"]].reason.startswith(f"copy of submission {sids['honest']}")
    assert verdicts[sids["unchanged"]].reason.startswith("unchanged global weights")
    assert verdicts[sids["elsewhere"]].reason.endswith("it was not read")
    assert not any(v.accept for sid, v in verdicts.items() if sid != sids["honest"])


def test_seed_api_refuses_copies_and_foreign_locations_on_the_embedded_marketplace(tmp_path):
    market = EmbeddedMarketplace(tmp_path / "m.sqlite")
    market.fund(dev_keypair("Alice").ss58_address, 10**13)
    task_id, sids = hostile_round(market, tmp_path, f"memory://seed-hostile-{tmp_path.name}")
    verdicts = {v.submission_id: v for v in validate_task_results(market, task_id)}
    assert_hostile_results_refused(verdicts, sids)


@pytest.mark.integration
@pytest.mark.slow
def test_seed_api_refuses_copies_in_chain_commit_order(chain_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    substrate = SubstrateInterface(url=chain_url, ss58_format=42)
    market = as_marketplace(substrate)
    for uri in ("//Alice", "//Bob", "//Charlie", "//Dave", "//Eve"):
        market.fund(keypair_from_uri(uri).ss58_address, 10**15)
    task_id, sids = hostile_round(substrate, tmp_path, (tmp_path / "storage").as_uri())
    verdicts = {v.submission_id: v for v in validate_task_results(substrate, task_id)}
    assert_hostile_results_refused(verdicts, sids)
    orders = {s.submission_id: s.commit_order for s in list_task_results(substrate, task_id)}
    assert orders[sids["honest"]] < orders[sids["copy"]]
