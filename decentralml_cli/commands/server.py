"""``decentralml server``: the local Prefect server the contributor agents of this Prefect
home share (decentralml.runtime.local_server), and how an agent comes to use it."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from decentralml.runtime import local_server

SERVER_MODE_ENV = "DECENTRALML_PREFECT_SERVER"
"""``shared`` (the default): agents reuse one local server per Prefect home; ``temporary``:
each process starts Prefect's own temporary server, as Prefect's ephemeral mode does."""


def use_the_local_server() -> None:
    """With no Prefect API configured (variable, profile or prefect.toml), point this
    process at its Prefect home's shared server, started detached if none answers. Runs
    before anything else reads Prefect's settings; a configured server is left as it is."""
    if os.environ.get(SERVER_MODE_ENV, "shared") == "temporary":
        return
    from prefect.context import refresh_global_settings_context
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url or not settings.server.ephemeral.enabled:
        return
    server, started = local_server.ensure(
        Path(settings.home), settings.server.ephemeral.startup_timeout_seconds
    )
    os.environ["PREFECT_API_URL"] = server.api_url
    os.environ.setdefault("PREFECT_UI_URL", "")  # it serves no UI: no dead "View at" links
    refresh_global_settings_context()  # Prefect's own way to pick up a changed variable
    if started:
        print(
            f"started a local Prefect server at {server.api_url} (pid {server.pid}, database "
            f"in {server.home}); later agents reuse it; `decentralml server stop` stops it",
            file=sys.stderr,
        )


def prefect_for_an_agent() -> None:
    """An agent's own process: the shared local server, else (Prefect's temporary server, a
    child of this process) a watcher that ends that server with us even after kill -9."""
    use_the_local_server()
    if not os.environ.get("PREFECT_API_URL"):
        from decentralml.runtime.reaper import watch_parent

        watch_parent()


def _home() -> Path:
    from prefect.settings import get_current_settings

    return Path(get_current_settings().home)


def cmd_server(args: argparse.Namespace) -> int:
    """start: the shared server (if none answers); status: where it answers; stop: stop it."""
    home = _home()
    if args.action == "start":
        use_the_local_server()
        server = local_server.running(home)
    elif args.action == "stop":
        server = local_server.stop(home)
        print(f"stopped the local Prefect server (pid {server.pid})" if server else
              f"no local Prefect server running for {home}")  # fmt: skip
        return 0
    else:
        server = local_server.running(home)
    if server is None:
        print(f"no local Prefect server running for {home}")
        return 1
    print(f"{server.api_url} (pid {server.pid}, database in {server.home})")
    return 0
