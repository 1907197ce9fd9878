"""The ``decentralml`` parser and ``main``: parse, run one command, turn a refusal into one
line and an exit status.

Named ``app`` rather than ``main`` so the package can re-export the ``main`` function (the
installed script's entry point is ``decentralml_cli:main``) without a module of the same name
shadowing it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import get_args

from decentralml.protocol.errors import DecentralMLError
from decentralml.runtime import checks
from decentralml.runtime.config import (
    MARKETPLACE_ENV,
    AttackKind,
    LocalOptimizer,
    StrategyName,
    comma_list,
)
from decentralml_cli.config import DEFAULT_CONFIG

ATTACKS = get_args(AttackKind)
STRATEGY_NAMES = get_args(StrategyName)
OPTIMIZERS = get_args(LocalOptimizer)


def build_parser() -> argparse.ArgumentParser:
    """Every command, its options and the config checks it needs. The commands' modules are
    imported here, when a command is parsed, so that importing the CLI stays light."""
    import decentralml_cli as package
    from decentralml_cli.commands import contributor, creator, inspect, server

    parser = argparse.ArgumentParser(
        prog="decentralml", description=package.__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, handler, help_text: str, uses: tuple) -> argparse.ArgumentParser:
        """``uses``: the checks (decentralml.runtime.checks) for the config parts it uses."""
        command = sub.add_parser(name, help=help_text)
        command.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
        command.set_defaults(handler=handler, checks=uses)
        return command

    demo = add(
        "demo", creator.cmd_demo, "run a whole federated training on this machine", checks.DEMO
    )
    demo.add_argument("--rounds", type=int)
    demo.add_argument("--contributors", type=int)
    demo.add_argument("--partition", choices=["iid", "shards", "shards-disjoint", "dirichlet"])
    demo.add_argument("--marketplace", choices=["embedded", "substrate"])
    demo.add_argument("--validation", choices=["AutoAccept", "ManualAccept", "CustomAccept"])
    demo.add_argument(
        "--payment-rule",
        choices=["per_result", "value"],
        help="pay each accepted result a fixed share, or by its measured value",
    )
    demo.add_argument("--epochs", type=int)
    demo.add_argument("--optimizer", choices=OPTIMIZERS, help="the contributors' local optimizer")
    demo.add_argument("--learning-rate", type=float, help="the contributors' learning rate")
    demo.add_argument("--decisions", help="ManualAccept: JSON/YAML file of verdicts by id")
    demo.add_argument("--strategy", choices=STRATEGY_NAMES, help="aggregation rule")
    demo.add_argument("--attack", choices=ATTACKS, help="simulate attackers of this kind")
    demo.add_argument("--attackers", type=int, help="how many contributors attack (the last K)")
    demo.add_argument("--summary-json", type=Path)
    demo.add_argument("--workload", help="model and data (decentralml workloads; or mod:attr)")
    train_cmd = add(
        "train",
        creator.cmd_train,
        "creator: publish and run every round (contributors elsewhere)",
        checks.CREATE,
    )
    train_cmd.add_argument("--rounds", type=int)
    train_cmd.add_argument("--workload", help="model and data (decentralml workloads; or mod:attr)")
    train_cmd.add_argument(
        "--run", help="name of the training (default: config name); rerun it to resume"
    )
    publish_cmd = add(
        "publish", creator.cmd_publish, "creator: publish one round's task", checks.PUBLISH
    )
    publish_cmd.add_argument("--round", type=int, default=1)
    publish_cmd.add_argument("--run", help="run name for storage paths (default: config name)")
    publish_cmd.add_argument("--weights", help="URL of global weights to start from")
    round_cmd = add(
        "round",
        creator.cmd_round,
        "creator: collect, validate, federate and settle a task",
        checks.CREATE,
    )
    round_cmd.add_argument("task_id", type=int)
    round_cmd.add_argument("--validation", choices=["AutoAccept", "ManualAccept", "CustomAccept"])
    round_cmd.add_argument("--decisions", help="ManualAccept: JSON/YAML file of verdicts by id")
    round_cmd.add_argument("--run", help="run name for storage paths (default: config name)")
    review_cmd = add(
        "review",
        creator.cmd_review,
        "creator: list a task's submissions awaiting a ManualAccept decision",
        checks.CREATE,
    )
    review_cmd.add_argument("task_id", type=int)
    review_cmd.add_argument("--write", type=Path, help="write a decisions file to fill in")
    review_cmd.add_argument("--run", help="run name for storage paths (default: config name)")
    tasks_cmd = add("tasks", inspect.cmd_tasks, "list open tasks", checks.READ)
    tasks_cmd.add_argument("action", nargs="?", choices=["list"], default="list")
    tasks_cmd.add_argument("--all", action="store_true", help="include finished tasks")
    results = add("results", inspect.cmd_results, "list a task's submissions", checks.READ)
    results.add_argument("action", nargs="?", choices=["list"], default="list")
    results.add_argument("task_id", type=int)
    balance = add("balance", inspect.cmd_balance, "show an account's balance", checks.READ)
    balance.add_argument("address", help="SS58 address or dev URI such as //Bob")
    contribute_cmd = add(
        "contribute",
        contributor.cmd_contribute,
        "contributor: work on new tasks as they appear",
        checks.CONTRIBUTE,
    )
    contribute_cmd.add_argument("--index", type=int, default=0, help="data shard index")
    contribute_cmd.add_argument(
        "--data",
        type=Path,
        help="train on this file or folder (.npz x/y, .csv with a label column, or "
        "a folder of images in one subfolder per label: PATH/<label>/*.png)",
    )
    add("workloads", inspect.cmd_workloads, "list the built-in and installed workloads", ())
    contribute_cmd.add_argument(
        "--max-tasks", "--rounds", dest="max_tasks", type=int, help="stop after this many tasks"
    )
    contribute_cmd.add_argument(
        "--models",
        type=comma_list,
        metavar="NAME,...",
        help="train only these models, skip other tasks (default: $DECENTRALML_MODELS, else any)",
    )
    contribute_cmd.add_argument(
        "--creators",
        type=comma_list,
        metavar="SS58,...",
        help="take only these creators' tasks (default: $DECENTRALML_CREATORS, else anyone's)",
    )
    contribute_cmd.add_argument(
        "--min-reward-per-result",
        type=int,
        metavar="AMOUNT",
        help="skip tasks paying less per accepted result "
        "(default: $DECENTRALML_MIN_REWARD_PER_RESULT, else the config's, 1)",
    )
    server_cmd = add(
        "server", server.cmd_server, "the local Prefect server this Prefect home's agents share", ()
    )
    server_cmd.add_argument("action", choices=["status", "start", "stop"])
    for command in (contribute_cmd, tasks_cmd):
        command.add_argument(
            "--marketplace",
            dest="marketplace_at",
            metavar="URL_OR_PATH",
            help="a chain's ws:// URL or an embedded marketplace's file "
            f"(default: ${MARKETPLACE_ENV}, else the config's)",
        )
    return parser


PREFECT_DEFAULTS = {
    # Prefect's 20 s is too short for ephemeral mode's temporary server on a busy machine.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    # Its SQLite answers 503 on a write lock ("database is locked") and its 15-connection pool
    # a 500 after 30 s of waiting; with 100 agents both happen. The client retries 503 with a
    # 2**n s back-off: 8 tries ride out ~8 min of a slow orchestrator instead of Prefect's ~1.
    "PREFECT_CLIENT_MAX_RETRIES": "8",
    "PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_TIMEOUT": "120",
}


EPHEMERAL_TIMEOUT = "Timed out while attempting to connect to ephemeral Prefect API server."
"""How Prefect 3 reports that its temporary server did not answer in time (a RuntimeError)."""


def _server_did_not_start() -> str:
    """Prefect's start-up timeout, as one line with the fix."""
    from prefect.settings import get_current_settings

    seconds = get_current_settings().server.ephemeral.startup_timeout_seconds
    return (
        f"the local Prefect server did not start within {seconds} s; set "
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS higher, or PREFECT_API_URL to a "
        "running Prefect server"
    )


FLOW_COMMANDS = frozenset({"demo", "train", "publish", "round", "contribute"})
"""The commands that run Prefect flows (so may start Prefect's temporary server)."""
SHARED_SERVER_COMMANDS = frozenset({"contribute"})
"""The commands that reuse their Prefect home's local server instead of starting a temporary
one (decentralml_cli.commands.server.prefect_for_an_agent, called once their input is
checked): an agent is started again and again, and stopped with Ctrl-C. The creator's
commands run once per training and keep Prefect's ephemeral mode."""


def main(argv: list[str] | None = None) -> int:
    for name, value in PREFECT_DEFAULTS.items():  # before Prefect is imported; the user's win
        os.environ.setdefault(name, value)
    args = build_parser().parse_args(argv)
    args.own_process = argv is None  # not a caller's (a test's, a script's) process
    try:
        if args.own_process and args.command in FLOW_COMMANDS - SHARED_SERVER_COMMANDS:
            from decentralml.runtime.reaper import watch_parent

            watch_parent()  # Prefect's temporary server ends with us, even after kill -9
        return args.handler(args)
    except DecentralMLError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        if not str(error).startswith(EPHEMERAL_TIMEOUT):
            raise
        print(f"error: {_server_did_not_start()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130  # 128 + SIGINT, as a shell reports it
