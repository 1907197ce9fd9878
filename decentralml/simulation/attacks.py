"""Simulated attackers: what a dishonest contributor sends instead of its honest work.

For demos, tests and benchmarks only (``decentralml demo --attack KIND --attackers K``): the
creator's defences are measured against these (docs/benchmarks.md, docs/security.md).

* ``sign_flip``: the update reversed and scaled, ``g - scale·(w - g)`` (scale 10) — the
  classic model-poisoning attack of Blanchard et al. 2017 / Fang et al. 2020.
* ``scaled``: the update boosted, ``g + scale·(w - g)``: "model replacement" (Bagdasaryan et
  al., "How To Backdoor Federated Learning", AISTATS 2020).
* ``gaussian_noise``: the trained weights plus N(0, ``noise_std``) on every parameter.
* ``label_flip``: honest training on poisoned labels (``9 - y``): a normal-sized, harmful update.
* ``free_rider``: trains nothing; sends a copy of another contributor's result once one is
  readable, or the global weights back if none appears in time.
* ``inflated_examples``: honest weights, but claims ``10**15`` examples to buy influence.
* ``backdoor``: half of its shard stamped with a 3×3 white patch in the bottom-right corner and
  relabelled 0 (BadNets, Gu et al. 2017): clean accuracy barely moves, stamped digits turn 0.
* ``sybil``: one party behind all the attacking accounts trains once (the first account's
  training) and sends it from every account with Gaussian noise just above the copy threshold
  (relative distance ``SYBIL_NOISE``), so no account is a copy of another.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import get_args

import numpy as np
from substrateinterface import Keypair

from decentralml.contributor import Contributor, ContributorSteps, TaskInputs, result_url
from decentralml.io.storage import ArtifactStore
from decentralml.io.weights import decode
from decentralml.marketplace.base import Marketplace
from decentralml.ml.training import TrainingOutcome
from decentralml.protocol.accounts import same_account
from decentralml.protocol.records import Task
from decentralml.runtime.config import AttackConfig, AttackKind

ATTACKS: tuple[str, ...] = get_args(AttackKind)
INFLATED_CLAIM = 10**15
FREE_RIDER_WAIT_SECONDS = 120.0
BACKDOOR_TARGET = 0
BACKDOOR_PATCH = 3
SYBIL_NOISE = 0.06
"""Relative distance of each Sybil account's update from the shared training's (the copy
threshold is 0.05)."""


def stamp(x: np.ndarray) -> np.ndarray:
    """``x`` with the backdoor trigger: the bottom-right ``BACKDOOR_PATCH`` square of each
    28×28 image (or flat 784-vector) set to the brightest value in ``x``."""
    stamped = np.array(x, copy=True)
    images = stamped.reshape(len(stamped), 28, 28) if stamped[0].size == 784 else stamped
    images[:, -BACKDOOR_PATCH:, -BACKDOOR_PATCH:] = stamped.max() if stamped.size else 0
    return stamped


def backdoor_success_rate(predict: Callable[[np.ndarray], np.ndarray], x, y) -> float | None:
    """The share of test images not of the target class that the model puts in the target
    class once stamped with the trigger (the backdoor's attack success rate; a clean model's
    is the baseline). None for data that are not 28×28 images."""
    if len(y) == 0 or np.asarray(x[0]).size != 784:
        return None
    keep = np.asarray(y) != BACKDOOR_TARGET
    scores = predict(stamp(np.asarray(x)[keep]))
    return float(np.mean(np.argmax(scores, axis=-1) == BACKDOOR_TARGET))


class _SharedTrainings:
    """The one training behind every Sybil account, per task: the first account to finish
    training leaves it here; the others send it (with their own noise) instead of theirs.
    The demo's simulated contributors are threads of one process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_task: dict[int, TrainingOutcome] = {}

    def first(self, task_id: int, outcome: TrainingOutcome) -> TrainingOutcome:
        with self._lock:
            return self._by_task.setdefault(task_id, outcome)


SYBIL_TRAININGS = _SharedTrainings()


@dataclass(frozen=True)
class Attack:
    """One attacker's behaviour; ``scale`` and ``noise_std`` as described in the module."""

    kind: AttackKind
    scale: float = 10.0
    noise_std: float = 0.5

    @classmethod
    def from_config(cls, config: AttackConfig) -> Attack | None:
        if config.kind is None:
            return None
        return cls(config.kind, config.scale, config.noise_std)

    def labels(self, y: np.ndarray) -> np.ndarray:
        """The labels this attacker trains on (flipped for ``label_flip``)."""
        return (9 - y).astype(y.dtype) if self.kind == "label_flip" else y

    def data(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The examples this attacker trains on: its own, labels flipped for ``label_flip``,
        half of them stamped with the trigger and labelled ``BACKDOOR_TARGET`` for
        ``backdoor``."""
        if self.kind != "backdoor":
            return x, self.labels(y)
        half = len(y) // 2
        poisoned_x, poisoned_y = np.array(x, copy=True), np.array(y, copy=True)
        poisoned_x[:half] = stamp(x[:half])
        poisoned_y[:half] = BACKDOOR_TARGET
        return poisoned_x, poisoned_y

    def claim(self, num_examples: int) -> int:
        return INFLATED_CLAIM if self.kind == "inflated_examples" else num_examples

    def weights(
        self,
        global_tensors: Mapping[str, np.ndarray],
        trained: Mapping[str, np.ndarray],
        seed: int = 0,
    ) -> dict[str, np.ndarray]:
        """What this attacker sends, given what honest training produced."""
        if self.kind == "sign_flip":
            return _along_update(global_tensors, trained, -self.scale)
        if self.kind == "scaled":
            return _along_update(global_tensors, trained, self.scale)
        if self.kind == "gaussian_noise":
            rng = np.random.default_rng(seed)
            return {
                n: (t + rng.normal(0.0, self.noise_std, t.shape)).astype(t.dtype)
                for n, t in trained.items()
            }
        return dict(trained)


def _along_update(
    global_tensors: Mapping[str, np.ndarray], trained: Mapping[str, np.ndarray], factor: float
) -> dict[str, np.ndarray]:
    return {n: (g + factor * (trained[n] - g)).astype(g.dtype) for n, g in global_tensors.items()}


def tamper(
    attack: Attack,
    outcome: TrainingOutcome,
    global_tensors: Mapping[str, np.ndarray],
    copy_source: Mapping[str, np.ndarray] | None = None,
    seed: int = 0,
) -> TrainingOutcome:
    """The outcome this attacker sends instead of ``outcome``; a free-rider sends
    ``copy_source`` (another contributor's weights), or the global weights back."""
    if attack.kind == "free_rider":
        tensors = dict(copy_source if copy_source is not None else global_tensors)
        return TrainingOutcome(tensors, outcome.num_examples, outcome.metrics)
    if attack.kind == "sybil":
        shared = copy_source if copy_source is not None else outcome.tensors
        tensors = noisy_copy(global_tensors, shared, SYBIL_NOISE, seed)
        return TrainingOutcome(tensors, outcome.num_examples, outcome.metrics)
    tensors = attack.weights(global_tensors, outcome.tensors, seed)
    return TrainingOutcome(tensors, attack.claim(outcome.num_examples), outcome.metrics)


def noisy_copy(
    global_tensors: Mapping[str, np.ndarray],
    trained: Mapping[str, np.ndarray],
    relative: float,
    seed: int,
) -> dict[str, np.ndarray]:
    """``trained`` plus Gaussian noise that moves its update ``relative`` (L2, in expectation)
    away from the original: a copy the copy detector does not call one."""
    names = sorted(global_tensors)
    update = np.concatenate([(trained[n] - global_tensors[n]).ravel() for n in names])
    sigma = relative * float(np.linalg.norm(update)) / np.sqrt(max(update.size, 1))
    rng = np.random.default_rng(seed)
    return {
        n: (trained[n] + rng.normal(0.0, sigma, trained[n].shape)).astype(trained[n].dtype)
        for n in names
    }


def someone_elses_result(
    market: Marketplace,
    store: ArtifactStore,
    task: Task,
    worker: Keypair,
    wait_seconds: float = FREE_RIDER_WAIT_SECONDS,
    poll_seconds: float = 0.5,
) -> dict[str, np.ndarray] | None:
    """What a free-rider copies: the first other result of the task readable in storage."""
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        for submission in market.list_task_results(task.task_id):
            if submission.result is None or same_account(submission.worker, worker.ss58_address):
                continue
            location = result_url(task, submission.submission_id)
            if store.exists(location):
                return decode(store.get(location, submission.result.sha256))
        time.sleep(poll_seconds)
    return None


def attacker_outcome(
    attack: Attack,
    contributor: Contributor,
    task: Task,
    global_tensors: Mapping[str, np.ndarray],
    outcome: TrainingOutcome,
) -> TrainingOutcome:
    """What ``contributor``, attacking with ``attack``, sends for ``task`` after its own
    training."""
    source = None
    if attack.kind == "free_rider":
        market, store, worker = contributor.market, contributor.store, contributor.keypair
        source = someone_elses_result(market, store, task, worker)
    if attack.kind == "sybil":
        source = SYBIL_TRAININGS.first(task.task_id, outcome).tensors
    return tamper(attack, outcome, global_tensors, source, seed=contributor.shard_index)


def attacked(
    steps: ContributorSteps,
    attack: Attack | None,
    contributor: Contributor,
    tamper_step: Callable[..., TrainingOutcome] = attacker_outcome,
) -> ContributorSteps:
    """The contributor procedure's steps with ``train`` wrapped from outside: the attacker
    trains on its poisoned labels, then sends what ``tamper_step`` (``attacker_outcome``, or
    an orchestrator's wrapped copy of it) makes of the honest outcome. Production code knows
    nothing of attacks; None leaves the steps as they are."""
    if attack is None:
        return steps
    honest = steps.train

    def train(task: Task, inputs: TaskInputs, x, y, local, seed: int) -> TrainingOutcome:
        poisoned_x, poisoned_y = attack.data(x, y)
        outcome = honest(task, inputs, poisoned_x, poisoned_y, local, seed)
        return tamper_step(attack, contributor, task, inputs.global_tensors, outcome)

    return dataclasses.replace(steps, train=train)
