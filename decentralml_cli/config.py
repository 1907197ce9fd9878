"""A command's config: the file, the command line's overrides on top, checked for the parts
of it the command uses before anything is opened or published.

Shared by the creator, contributor and inspection commands; the checks each command asks for
are set where the parser is built (``decentralml_cli.app``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from decentralml.protocol.errors import ConfigError
from decentralml.runtime import checks
from decentralml.runtime.config import (
    MARKETPLACE_ENV,
    RunConfig,
    load_config,
    load_contributor_config,
    marketplace_location,
)

DEFAULT_CONFIG = Path("configs/mnist.yaml")
SUBSTRATE_CONFIG = Path("configs/mnist-substrate.yaml")
DEFAULT_CONFIG_FOR = {"substrate": SUBSTRATE_CONFIG}
"""The config a ``--marketplace`` choice starts from when no ``--config`` is given."""


def _overrides(args: argparse.Namespace) -> dict:
    found = {}
    for dotted, attr in (
        ("rounds", "rounds"),
        ("contributors", "contributors"),
        ("data.partition", "partition"),
        ("marketplace.backend", "marketplace"),
        ("storage.url", "storage"),
        ("task.validation_strategy", "validation"),
        ("task.payment_rule", "payment_rule"),
        ("task.manual_decisions", "decisions"),
        ("training.epochs", "epochs"),
        ("training.optimizer", "optimizer"),
        ("training.learning_rate", "learning_rate"),
        ("attack.kind", "attack"),
        ("attack.attackers", "attackers"),
        ("strategy", "strategy"),
        ("workload", "workload"),
        ("contributor.models", "models"),
        ("contributor.creators", "creators"),
        ("contributor.min_reward_per_result", "min_reward_per_result"),
    ):
        value = getattr(args, attr, None)
        if value is not None:
            found[dotted] = value
    found.update(_workload_overrides(getattr(args, "workload", None)))
    if getattr(args, "contributors", None) is not None and getattr(args, "command", "") == "demo":
        found.setdefault("task.max_assignments", args.contributors)
    return found


def _workload_overrides(name: str | None) -> dict[str, object]:
    """``--workload NAME``: that workload, its data (``data.source`` follows it) and the
    settings a built-in workload needs to fit the shipped configs (decentralml/ml/workloads/)."""
    if name is None:
        return {}
    from decentralml.ml import workloads

    return {"data.source": None, **workloads.get(name).config}


def _config(args: argparse.Namespace) -> RunConfig:
    """The command's config with its overrides, checked for the parts the command uses
    (``checks``, set per command in build_parser) before anything is opened or published."""
    path = args.config
    if path == DEFAULT_CONFIG:  # a chain wants chain-sized rewards and accounts, not just a flag
        path = DEFAULT_CONFIG_FOR.get(getattr(args, "marketplace", None), path)
    config = load_config(path, _overrides(args))
    return checks.check_config(config, args.checks, source=str(path))


def _contributor_config(args: argparse.Namespace) -> RunConfig:
    """A contributor's config: ``--config`` if given or present, else the defaults (a machine
    without the creator's file), pointed at ``--marketplace`` or $DECENTRALML_MARKETPLACE_URL."""
    if getattr(args, "index", 0) < 0:
        raise ConfigError(f"--index must be 0 or more (the contributor's shard), got {args.index}")
    path = args.config if args.config != DEFAULT_CONFIG or args.config.exists() else None
    location = getattr(args, "marketplace_at", None)
    config = load_contributor_config(path, location, _overrides(args))
    if not (path or location or os.environ.get(MARKETPLACE_ENV)):
        _refuse_no_marketplace(config)
    return checks.check_config(config, args.checks, source=str(path or "no config file"))


def _refuse_no_marketplace(config: RunConfig) -> None:
    """Nothing names a marketplace (no config file here, no ``--marketplace``, no variable):
    the defaults' embedded marketplace is a file relative to this folder. Where nothing was
    ever published it would be created empty and watched forever, so that is refused; a
    config file or a named marketplace may be waited for (its creator may publish later)."""
    where = marketplace_location(config.marketplace)
    if not Path(where).exists():
        raise ConfigError(
            f"no marketplace to contribute to: no config file here, no --marketplace and no "
            f"${MARKETPLACE_ENV}, and nothing was published at {where}; name the creator's "
            f"marketplace: --marketplace ws://HOST:PORT (a chain) or the path of its SQLite file"
        )
