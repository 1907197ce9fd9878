"""The read-only commands: ``tasks``, ``results``, ``balance`` and ``workloads``.

They open a marketplace (or the workload registry) and print a table; none starts a flow, so
none pays for TensorFlow or Prefect start-up.
"""

from __future__ import annotations

import argparse

from decentralml.protocol.errors import ConfigError
from decentralml_cli.config import _config, _contributor_config


def cmd_workloads(args: argparse.Namespace) -> int:
    """The built-in workloads, then those installed distributions publish (entry points):
    what ``workload:`` (or ``--workload``) accepts. A published one that cannot be loaded is
    listed as broken, with why, and the others are still listed."""
    from decentralml.ml import workloads

    print(f"{'name':<14} {'data':<14} {'metric':<9} {'input':<9} model")
    for name in [*workloads.names(), *workloads.published()]:
        try:
            workload = workloads.get(name)
        except ConfigError as error:
            print(f"{name:<14} broken: {error}")
            continue
        spec = workload.dataset.spec
        shape = "x".join(str(d) for d in spec.input_shape)
        print(
            f"{name:<14} {workload.dataset.name:<14} {workload.primary_metric:<9} "
            f"{shape + ' ' + spec.dtype:<9} {workload.model}"
        )
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    config = _contributor_config(args)
    from decentralml.runtime.backends import open_marketplace

    market = open_marketplace(config.marketplace)
    block = market.current_block()
    print(
        f"{'id':>4} {'status':<11} {'reward/result':>13} {'free/slots':>10} {'blocks left':>11} "
        f"{'model':<12} {'epochs':>6} creator"
    )
    for task in market.list_tasks(open_only=not args.all):
        spec = task.spec
        left = spec.expiration_block - block
        print(
            f"{task.task_id:>4} {task.status.value:<11} {spec.reward_per_result:>13} "
            f"{f'{task.open_slots}/{spec.max_assignments}':>10} "
            f"{left if left > 0 else 'expired':>11} {spec.model or '-':<12} "
            f"{spec.epochs or '-':>6} {_short(task.creator)}"
        )
    return 0


def _short(address: str) -> str:
    """An address shortened as wallets show it: enough to recognise, not to copy."""
    return f"{address[:6]}...{address[-4:]}" if len(address) > 12 else address


def cmd_results(args: argparse.Namespace) -> int:
    config = _config(args)
    from decentralml.runtime.backends import open_marketplace

    market = open_marketplace(config.marketplace)
    print(f"{'id':>4} {'status':<17} {'examples':>8} {'paid':>10} contributor reason")
    for sub in market.list_task_results(args.task_id):
        examples = sub.result.num_examples if sub.result else "-"
        print(
            f"{sub.submission_id:>4} {sub.status.value:<17} {examples:>8} {sub.paid:>10} "
            f"{sub.worker} {sub.reason}"
        )
    return 0


def cmd_balance(args: argparse.Namespace) -> int:
    config = _config(args)
    from decentralml.protocol.accounts import keypair_from_uri
    from decentralml.runtime.backends import open_marketplace

    market = open_marketplace(config.marketplace)
    address = (
        args.address
        if not args.address.startswith("//")
        else keypair_from_uri(args.address).ss58_address
    )
    print(f"{address} {market.balance(address)}")
    return 0
