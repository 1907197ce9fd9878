"""A flaky Prefect API, injected on purpose: run a CLI command with some of its requests to the
Prefect server answered by a fault instead of the server.

    python -m tests.flaky_api demo --config ...     # decentralml's CLI, through the faults

The faults, in every HTTP client of the process (httpx's transports, sync and async):
the 1st and then every 3rd ``POST .../task_runs/`` and ``POST .../set_state`` (the 1st, 4th,
7th, ...: a run that makes only one or two such requests still meets the fault) gets
``503 Service Unavailable`` (what Prefect's SQLite-backed server answers on "database is
locked") without reaching the server; every ``POST .../artifacts/`` gets
``500 Internal Server Error``. How many of each were injected is written as JSON to
$FLAKY_API_REPORT at exit, so a test can tell that the faults really happened.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import sys
import threading
from collections import Counter

import httpx

RULES = (  # (name, method, path pattern, status, every n-th matching request)
    ("task_runs_503", "POST", re.compile(r"/api/task_runs/$"), 503, 3),
    ("set_state_503", "POST", re.compile(r"/set_state$"), 503, 3),
    ("artifacts_500", "POST", re.compile(r"/api/artifacts/$"), 500, 1),
)
seen: Counter[str] = Counter()
injected: Counter[str] = Counter()
_lock = threading.Lock()


def fault_for(request: httpx.Request) -> httpx.Response | None:
    """The injected answer to ``request``, or None to let it through."""
    for name, method, pattern, status, every in RULES:
        if request.method == method and pattern.search(request.url.path):
            with _lock:
                seen[name] += 1
                if (seen[name] - 1) % every:
                    return None
                injected[name] += 1
            return httpx.Response(status, json={"detail": f"injected {name}"}, request=request)
    return None


def install() -> None:
    sync_send = httpx.HTTPTransport.handle_request
    async_send = httpx.AsyncHTTPTransport.handle_async_request

    def handle_request(self, request):
        return fault_for(request) or sync_send(self, request)

    async def handle_async_request(self, request):
        return fault_for(request) or await async_send(self, request)

    httpx.HTTPTransport.handle_request = handle_request
    httpx.AsyncHTTPTransport.handle_async_request = handle_async_request
    report = os.environ.get("FLAKY_API_REPORT")
    if report:
        atexit.register(write_report, report)


def write_report(path: str) -> None:
    with open(path, "w") as out:
        json.dump({"seen": seen, "injected": injected}, out)


if __name__ == "__main__":
    install()
    from decentralml_cli import main

    sys.exit(main(sys.argv[1:]))
