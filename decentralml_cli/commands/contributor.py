"""The contributor's command, ``contribute``: an agent that works on new tasks as they appear,
on a machine that may not have the creator's config file."""

from __future__ import annotations

import argparse
import sys

from decentralml_cli.config import _contributor_config


def _local_data(args: argparse.Namespace) -> str | None:
    """``--data PATH`` read once now, so a missing or malformed file is one line before the
    agent starts (each task then checks it against its own data spec)."""
    if args.data is None:
        return None
    from decentralml.ml.workloads.local_data import read_local_data

    read_local_data(args.data)
    return str(args.data)


def cmd_contribute(args: argparse.Namespace) -> int:
    _contributor_config(args)  # refused here, before the agent flow starts (it loads its own)
    data_path = _local_data(args)
    from decentralml.runtime.shutdown import STOP

    with STOP.on_signals():  # from here on a signal stops the agent cleanly (see the module)
        from flows.contributor import agent

        path = args.config if args.config.exists() else ""
        state = agent(
            str(path), args.index, args.max_tasks, args.marketplace_at, data_path, return_state=True
        )
    if state.is_cancelled():
        print(f"stopped: {state.message}", file=sys.stderr)
        return STOP.exit_status
    print(f"contributed to {state.result()} task(s)")
    return 0
