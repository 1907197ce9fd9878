"""decentralml: federated model training on a marketplace.

The curated API, loaded on first use (importing ``decentralml`` stays light: no TensorFlow,
no Prefect). The seed's functions keep their own modules (``decentralml.create_task`` ...);
everything else is reached from here or from the folder of its concern
(docs/architecture.md, "Layers").
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    # what the parties agree on
    "Task": "decentralml.protocol.records",
    "TaskSpec": "decentralml.protocol.records",
    "TaskResult": "decentralml.protocol.records",
    "Submission": "decentralml.protocol.records",
    "Verdict": "decentralml.protocol.records",
    "ValidationStrategy": "decentralml.protocol.records",
    "DecentralMLError": "decentralml.protocol.errors",
    # marketplaces and configuration
    "Marketplace": "decentralml.marketplace.base",
    "RunConfig": "decentralml.runtime.config",
    "load_config": "decentralml.runtime.config",
    "open_marketplace": "decentralml.runtime.backends",
    "open_store": "decentralml.runtime.backends",
    # the two roles' engines
    "Contributor": "decentralml.contributor",
    "contribute_once": "decentralml.contributor",
    "CreatorSession": "decentralml.creator.session",
    "open_session": "decentralml.creator.session",
    "publish_round": "decentralml.creator.round",
    "settle_round": "decentralml.creator.round",
    "start_training": "decentralml.creator.round",
    # plugins
    "Strategy": "decentralml.strategies",
    "get_strategy": "decentralml.strategies",
    "Workload": "decentralml.ml.workloads.base",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import the curated name's module when the name is first used (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'decentralml' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
