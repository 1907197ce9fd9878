"""The creator's working state across rounds: its model, its data splits, its marketplace and
its strategy.

Built once per training so that each round reuses one compiled model for every evaluation
(compiling costs ~0.5 s), the data is loaded once, and a stateful strategy (FedAdam's moments)
carries its state from round to round.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from decentralml.creator import (
    Creator,
    Progress,
    published_global,
    task_settings,
    training_strategy,
)
from decentralml.io.weights import layout_of
from decentralml.ml import workloads
from decentralml.ml.data.federated import Split, creator_holdout, largest_shard, test_split
from decentralml.ml.models import evaluate, model_tensors, set_model_tensors
from decentralml.runtime.backends import (
    DEFAULT_ASSETS,
    creator_keypair,
    fund_dev_accounts,
    open_marketplace,
    open_store,
)
from decentralml.runtime.config import RunConfig
from decentralml.strategies import Strategy


class CreatorSession:
    """The creator's model, data splits, strategy and current global weights, across rounds.

    A slotted plain class on purpose: orchestrators that record call parameters (Prefect
    serializes flow parameters it can) would otherwise deep-copy the model and the data
    splits (~50 MB) on every flow call, and could record the creator's key."""

    __slots__ = (
        "creator",
        "global_tensors",
        "holdout",
        "max_examples",
        "model",
        "strategy",
        "test",
    )

    def __init__(
        self,
        creator: Creator,
        model: object,
        holdout: Split,
        test: Split,
        max_examples: int | None = None,
    ) -> None:
        self.creator, self.model, self.holdout, self.test = creator, model, holdout, test
        self.max_examples = max_examples
        self.global_tensors: dict[str, np.ndarray] = {}
        self.strategy: Strategy = training_strategy(creator.config)  # one per training

    def __repr__(self) -> str:
        return f"CreatorSession(run={self.creator.run!r})"

    @property
    def layout(self):
        return layout_of(self.global_tensors)

    def evaluate_tensors(
        self, tensors: Mapping[str, np.ndarray], split: Split | None = None
    ) -> dict:
        """Score weights without disturbing the global ones (restored afterwards)."""
        x, y = split or self.holdout
        set_model_tensors(self.model, dict(tensors))
        try:
            return evaluate(self.model, x, y)
        finally:
            set_model_tensors(self.model, self.global_tensors)

    def resume(self, progress: Progress) -> None:
        """Start from where a training got: the open round's published weights, else the last
        checkpoint, and the strategy's state after the last finished round; a fresh training
        keeps the model it was built with."""
        if progress.done_rounds:
            self.strategy.load_state(progress.strategy_state, progress.done_rounds)
        if progress.open_task is not None:
            self.set_global(published_global(self.creator, progress.open_task))
        elif progress.checkpoint is not None:
            self.set_global(progress.checkpoint)

    def set_global(self, tensors: Mapping[str, np.ndarray]) -> dict:
        """Adopt new global weights; returns their metrics on the full test set."""
        self.global_tensors = dict(tensors)
        set_model_tensors(self.model, self.global_tensors)
        return evaluate(self.model, *self.test)


def open_creator(config: RunConfig, run: str | None = None) -> Creator:
    """The creator's marketplace, storage and key for a run (default: the config's name),
    without the model or data: enough to inspect or close its tasks."""
    market = open_marketplace(config.marketplace)
    return Creator(
        config=config,
        market=market,
        store=open_store(config.storage),
        keypair=creator_keypair(config.marketplace, market),
        run=run or config.name,
        assets_dir=DEFAULT_ASSETS,
    )


def open_session(config: RunConfig, run: str | None = None) -> CreatorSession:
    """Build and compile the workload's model, optionally warm it up, and load the creator's
    splits of the workload's data (preprocessed as the task tells contributors to).

    ``run`` names the training (storage paths, progress read back on a rerun); by default the
    config's name, so rerunning the same config resumes it. The creator provides the
    contributors' shards, so it knows the largest one: no honest claim of examples exceeds it
    (``max_examples``, used by screening).

    In dev mode on the embedded marketplace the creator's account is topped up by the faucet.
    The warm-up trains on the creator's held-out split: it is the only data the creator holds,
    so validation after a warm-up is slightly optimistic for the creator's own model."""
    creator = open_creator(config, run)
    market = creator.market
    fund_dev_accounts(market, config, [creator.keypair])
    cache = config.data.cache_dir
    data = task_settings(config).data
    source, preprocessing = data.source, data.preprocessing
    holdout = creator_holdout(  # less the shared slice: never validate on training data
        config.data.holdout_examples,
        config.data.seed,
        cache,
        source,
        preprocessing,
        config.data.shared_slice,
    )
    workload = workloads.get(config.workload_name)
    model = workload.build_model(config.training.learning_rate)
    if config.training.initial_epochs:
        model.fit(
            *holdout,
            epochs=config.training.initial_epochs,
            batch_size=config.training.batch_size,
            verbose=0,
        )
    shard_cap = largest_shard(data, cache) + config.data.shared_slice  # each trains on both
    test = test_split(cache, source, preprocessing)
    session = CreatorSession(creator, model, holdout, test, shard_cap)
    session.global_tensors = model_tensors(model)
    return session
