"""Render the Prefect UI of a finished federated training into docs/images/ (headless Chromium).

    .venv/bin/python docs/render_ui.py [--out docs/images]     (or: make ui-images)

Starts a throwaway Prefect server (its own PREFECT_HOME in a temporary folder), runs a short
demo against it (3 honest contributors and one sign-flip attacker, 2 rounds, 1 epoch) so the
pictures show an accepted and a rejected result, then screenshots the runs list, the training
run, the last round's run and the keyed artifacts (submissions table, summary, chart), and
stops the server by its PID. Needs Debian's `chromium` (`apt-get install chromium`); it is a
documentation tool, not part of `make test`.

Why PREFECT_UI_API_URL is set: the UI asks the API at port 4200 unless told otherwise, and
shows "Can't connect to Server API" on any other port.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--virtual-time-budget=20000",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--port", type=int, default=0, help="Prefect server port (0: a free one)")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("error: chromium not found; install it (apt-get install chromium)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dml-ui-") as scratch:
        workdir = Path(scratch)
        port = args.port or _free_port()
        env = _prefect_env(workdir, port)
        server = _start_server(env, port, workdir)
        try:
            _run_demo(env, workdir)
            pages = _pages(env)
            for name, path in pages.items():
                width = 2300 if "submissions" in name else 1600  # the table's 11 columns
                url = f"http://127.0.0.1:{port}{path}"
                _screenshot(chromium, url, args.out / name, workdir, width)
                print(f"wrote {args.out / name}")
        finally:
            _stop(server)
    return 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _prefect_env(workdir: Path, port: int) -> dict[str, str]:
    api = f"http://127.0.0.1:{port}/api"
    return {
        **os.environ,
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_HOME": str(workdir / "prefect-home"),
        "PREFECT_API_URL": api,
        "PREFECT_UI_API_URL": api,
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "KERAS_HOME": str(ROOT / ".keras"),
        "DECENTRALML_DATA_DIR": os.environ.get("DECENTRALML_DATA_DIR", str(ROOT / ".cache/data")),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }


def _start_server(env: dict[str, str], port: int, workdir: Path) -> subprocess.Popen:
    log = (workdir / "server.log").open("w")
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{env['PREFECT_API_URL']}/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.5)
    _stop(server)
    raise SystemExit("error: the Prefect server did not become healthy in 120 s")


def _run_demo(env: dict[str, str], workdir: Path) -> None:
    config = yaml.safe_load((ROOT / "configs" / "mnist.yaml").read_text())
    config["name"] = "mnist-ui"
    config["marketplace"]["path"] = str(workdir / "marketplace.sqlite")
    config["storage"]["url"] = (workdir / "storage").as_uri()
    config_path = workdir / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    command = [
        str(BIN / "decentralml"), "demo", "--config", str(config_path), "--rounds", "2",
        "--contributors", "4", "--epochs", "1", "--attack", "sign_flip", "--attackers", "1",
    ]  # fmt: skip
    subprocess.run(command, env=env, cwd=workdir, check=True)


def _pages(env: dict[str, str]) -> dict[str, str]:
    """Screenshot name -> UI path, found through the API."""
    script = (
        "import json\n"
        "from prefect.client.orchestration import get_client\n"
        "with get_client(sync_client=True) as c:\n"
        "    runs = [{'id': str(r.id), 'name': r.name, 'parent': r.parent_task_run_id is not None}"
        " for r in c.read_flow_runs()]\n"
        "    arts = [{'id': str(a.id), 'key': a.key, 'created': a.created.isoformat()}"
        " for a in c.read_artifacts() if a.key]\n"
        "    print(json.dumps({'runs': runs, 'artifacts': arts}))\n"
    )
    found = json.loads(
        subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        ).stdout
    )
    pages = {"prefect-runs.png": "/runs"}
    runs = found["runs"]
    training = next((r for r in runs if not r["parent"]), None)
    if training:
        pages["prefect-training-run.png"] = f"/runs/flow-run/{training['id']}"
    rounds = sorted((r for r in runs if "round-2" in r["name"]), key=lambda r: r["name"])
    if rounds:
        pages["prefect-round-run.png"] = f"/runs/flow-run/{rounds[-1]['id']}"
    latest: dict[str, dict] = {}
    for artifact in sorted(found["artifacts"], key=lambda a: a["created"]):
        latest[artifact["key"]] = artifact
    for key, artifact in latest.items():
        if "round-1" in key:
            continue  # round 2's artifacts show the same kinds, with the history behind them
        short = re.sub(r"^mnist-ui-demo-\d{8}-\d{6}-", "", key).replace("round-2-", "round-")
        pages[f"prefect-artifact-{short}.png"] = f"/artifacts/artifact/{artifact['id']}"
    return pages


def _screenshot(chromium: str, url: str, out: Path, workdir: Path, width: int) -> None:
    profile = workdir / "chromium-profile"
    subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},1100",
         f"--screenshot={out}", url],
        env={**os.environ, "HOME": str(workdir)}, check=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120,
    )  # fmt: skip


def _stop(process: subprocess.Popen) -> None:
    for _ in range(2):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                continue
    if process.poll() is None:
        process.kill()


if __name__ == "__main__":
    sys.exit(main())
