"""The `decentralml` command: demo, creator, contributor and inspection commands.

It sits above the flows (it starts them), so it lives outside the core package ``decentralml``,
which imports no Prefect, flows or tasks (tests/test_layers.py); ``python -m decentralml_cli``
runs it like the installed ``decentralml`` script.

Flows are imported lazily inside commands, after the config is loaded and checked: listing
tasks or balances must not pay for TensorFlow and Prefect start-up, and a bad config is
refused before either starts. A config problem (or any refusal this package raises on
purpose) is one line ``error: ...`` and exit status 2; Ctrl-C is one line and status 130.

The parser and ``main`` are in ``app``, the config loading every command shares in ``config``,
and the commands in ``commands`` by role. This namespace re-exports them: the installed script
calls ``decentralml_cli:main``, and the parser takes each command's handler from here.
"""

from decentralml_cli.app import PREFECT_DEFAULTS, build_parser, main
from decentralml_cli.commands.contributor import cmd_contribute
from decentralml_cli.commands.creator import (
    cmd_demo,
    cmd_publish,
    cmd_review,
    cmd_round,
    cmd_train,
    print_round_table,
    round_progress,
)
from decentralml_cli.commands.inspect import cmd_balance, cmd_results, cmd_tasks, cmd_workloads
from decentralml_cli.config import DEFAULT_CONFIG, _config, _contributor_config, _workload_overrides

__all__ = [
    "DEFAULT_CONFIG",
    "PREFECT_DEFAULTS",
    "_config",
    "_contributor_config",
    "_workload_overrides",
    "build_parser",
    "cmd_balance",
    "cmd_contribute",
    "cmd_demo",
    "cmd_publish",
    "cmd_results",
    "cmd_review",
    "cmd_round",
    "cmd_tasks",
    "cmd_train",
    "cmd_workloads",
    "main",
    "print_round_table",
    "round_progress",
]
