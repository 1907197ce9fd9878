"""The README is a test: every command of "Storage on S3", "Run on several machines", "Rounds on
a schedule or a trigger" and "Running a contributor agent unattended", read from README.md
itself, so the docs cannot drift from the code (issue 18: an outside run found 11 doc errors).

What each check reads (fast, no server):
- every ``decentralml ...`` line, in a fenced block or inline, parses with the CLI's own parser;
  every ``--flag`` of the contributor's section is one of ``decentralml contribute``'s;
- every ``prefect ...`` subcommand exists and takes the flags written (its ``--help``);
- every deployment, flow, work pool and ``-p`` parameter matches prefect.yaml and the flow it
  deploys (read from the flow's source: no TensorFlow import);
- every variable named is read: ``DECENTRALML_*`` by this project's code, ``PREFECT_*`` is a
  Prefect setting, ``AWS_*`` one botocore reads;
- every config key (``storage.url``, the ``contributor:`` table) is a field of the config;
- every file, folder and module named exists, every ``pip install '.[extra]'`` extra is declared.

Run for real (slow): the creator's shell 2 and the scheduled-rounds commands, as written but
for the server's address and credentials, against a real Prefect server with basic auth (the
``prefect_server`` fixture, started as README shell 1 does, on a free port): the pools are
created, prefect.yaml deployed, and each ``prefect deployment run`` / ``schedule`` command
creates or finds what it names; the unattended contributor's ``decentralml tasks`` lists a task
of an embedded marketplace named only by ``DECENTRALML_MARKETPLACE_URL``. Not run here, each
needing several machines and a round's training: the worker and the two contributor agents
(tests/test_deployments.py runs a worker with these deployments, tests/test_multi_machine.py
the agents across trust domains); their lines are checked by the parsers above.

``test_a_drifted_readme_fails`` edits copies of the README and shows each check catching it.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest
import yaml

from decentralml.runtime.config import RunConfig
from decentralml_cli.app import build_parser
from tests.helpers import ROOT

README = ROOT / "README.md"
SECTIONS = ("Storage on S3", "Run on several machines", "Running a contributor agent unattended")
SCHEDULE = "**Rounds on a schedule or a trigger.**"
PREFECT = str(Path(sys.executable).with_name("prefect"))
CODE_FOLDERS = ("decentralml", "decentralml_cli", "flows", "tasks", "assets")
RELATIVE_TO = {"./start_task.sh": "assets/mnist/model_contributor/start_task.sh"}
"""Paths the README names as a contributor sees them (in its unpacked package)."""


# --- reading the README ------------------------------------------------------------------------


@dataclass
class Command:
    """One command line: the variables set for it (``VAR=value cmd`` or ``export``), its words."""

    line: str
    env: dict[str, str] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)


def sections(text: str) -> dict[str, str]:
    """Each section's text, from its heading to the next ``## `` heading; the scheduled rounds'
    paragraph (a part of "Run on several machines") on its own too."""
    found = {}
    for name in SECTIONS:
        match = re.search(rf"^## {re.escape(name)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
        assert match, f"README has no section '## {name}'"
        found[name] = match.group(1)
    start = text.find(SCHEDULE)
    assert start >= 0, f"README has no paragraph {SCHEDULE}"
    found["Rounds on a schedule"] = text[start : text.find("\n\n", start)]
    return found


def fenced_lines(text: str) -> list[str]:
    """The lines of the ```bash blocks, continuations joined."""
    lines = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, re.M | re.S):
        lines += [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    return lines


def inline_commands(text: str) -> list[str]:
    """The inline code spans that are commands (they may wrap over lines)."""
    spans = (" ".join(span.split()) for span in re.findall(r"`([^`]+)`", text))
    return [span for span in spans if span.split(" ")[0] in ("decentralml", "prefect", "make")]


def parse_line(line: str) -> Command:
    words = shlex.split(line, comments=True)
    command = Command(line)
    if words and words[0] == "export":
        command.env = dict(word.split("=", 1) for word in words[1:])
        return command
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        name, value = words.pop(0).split("=", 1)
        command.env[name] = value
    command.argv = [word for word in words if word != "&"]
    return command


def commands(text: str) -> list[Command]:
    """Every command of the four sections, fenced or inline, in the README's order."""
    found = []
    for body in sections(text).values():
        found += [parse_line(line) for line in fenced_lines(body)]
        found += [parse_line(span) for span in inline_commands(body)]
    return found


def readme() -> str:
    return README.read_text()


# --- the checks: each returns the problems it found, one line each -----------------------------


def cli_problems(text: str) -> list[str]:
    """Every ``decentralml`` line parses with the CLI's parser; the contributor's flags exist."""
    problems = []
    for command in commands(text):
        if command.argv[:1] != ["decentralml"]:
            continue
        said = io.StringIO()
        try:
            with contextlib.redirect_stderr(said):
                build_parser().parse_args(command.argv[1:])
        except SystemExit:
            error = said.getvalue().strip().splitlines()[-1]
            problems.append(f"`{command.line}` does not parse: {error}")
    contribute = _subparser("contribute")
    unattended = sections(text)["Running a contributor agent unattended"]
    for flag in set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", unattended)):
        if flag not in contribute._option_string_actions:
            problems.append(f"`decentralml contribute` has no {flag}")
    return problems


def _subparser(name: str):
    parser = build_parser()
    [sub] = [a for a in parser._actions if a.dest == "command"]
    return sub.choices[name]


HELP_SCRIPT = """
import contextlib, io, json, sys
from prefect.cli import app  # what the `prefect` script runs
helps = {}
for words in json.loads(sys.argv[1]):
    sys.argv = ["prefect", *words, "--help"]
    said = io.StringIO()
    with contextlib.redirect_stdout(said), contextlib.redirect_stderr(io.StringIO()):
        try:
            code = app()
        except SystemExit as exit:
            code = exit.code
    helps[" ".join(words)] = said.getvalue() if code in (0, None) else ""
print(json.dumps(helps))
"""


@cache
def prefect_helps() -> dict[str, str]:
    """``prefect SUBCOMMAND --help`` of each subcommand the README uses ("" when Prefect has
    no such command), in one process: each ``prefect`` process costs seconds of imports."""
    wide = {**os.environ, "COLUMNS": "250"}  # one option per line, none wrapped
    done = subprocess.run(
        [sys.executable, "-c", HELP_SCRIPT, json.dumps(PREFECT_SUBCOMMANDS)],
        env=wide, capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    return json.loads(done.stdout.splitlines()[-1])


def prefect_help(*subcommand: str) -> str:
    return prefect_helps()[" ".join(subcommand)]


PREFECT_SUBCOMMANDS = (
    ("deployment", "schedule", "resume"),
    ("deployment", "schedule", "ls"),
    ("deployment", "run"),
    ("work-pool", "create"),
    ("server", "start"),
    ("worker", "start"),
    ("deploy",),
)


def prefect_problems(text: str) -> list[str]:
    """Every ``prefect`` line is a known subcommand taking the flags written."""
    problems = []
    for command in commands(text):
        if command.argv[:1] != ["prefect"]:
            continue
        words = [w for w in command.argv[1:] if w != "--no-prompt"]  # a global option
        subcommand = next((s for s in PREFECT_SUBCOMMANDS if tuple(words[: len(s)]) == s), None)
        if subcommand is None:
            problems.append(f"`{command.line}`: no such prefect command is checked here")
            continue
        help_text = prefect_help(*subcommand)
        if not help_text:
            problems.append(f"`{command.line}`: prefect has no `{' '.join(subcommand)}`")
        for flag in (w.split("=")[0] for w in words if w.startswith("-")):
            if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text):
                problems.append(f"`{command.line}`: `prefect {' '.join(subcommand)}` has no {flag}")
    return problems


def prefect_yaml() -> dict:
    return yaml.safe_load((ROOT / "prefect.yaml").read_text())


def flow_of(entrypoint: str) -> tuple[str, list[str]]:
    """The flow's name and parameters, read from its source (no import: no TensorFlow)."""
    module, function = entrypoint.split(":")
    tree = ast.parse((ROOT / (module.replace(".", "/") + ".py")).read_text())
    [node] = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function]
    [name] = [
        keyword.value.value
        for decorator in node.decorator_list
        if isinstance(decorator, ast.Call) and getattr(decorator.func, "id", "") == "flow"
        for keyword in decorator.keywords
        if keyword.arg == "name"
    ]
    return name, [arg.arg for arg in node.args.args]


def deployment_problems(text: str) -> list[str]:
    """Deployments, pools and ``-p`` parameters the README uses are prefect.yaml's."""
    config = prefect_yaml()
    deployments = {}
    for deployment in config["deployments"]:
        flow, parameters = flow_of(deployment["entrypoint"])
        deployments[f"{flow}/{deployment['name']}"] = parameters
    pools = {deployment["work_pool"]["name"] for deployment in config["deployments"]}
    problems = []
    for command in commands(text):
        words = command.argv
        for name in (w for w in words if re.fullmatch(r"[a-z-]+/[a-z-]+", w)):
            if name not in deployments:
                problems.append(f"`{command.line}`: no deployment {name} in prefect.yaml")
            for index, word in enumerate(words[:-1]):
                if word == "-p" and words[index + 1].split("=")[0] not in deployments.get(name, []):
                    problems.append(f"`{command.line}`: {name} has no parameter {words[index + 1]}")
        pool = _after(words, "--pool") or (
            words[3] if words[:3] == ["prefect", "work-pool", "create"] else None
        )
        if pool and pool not in pools:
            problems.append(f"`{command.line}`: no work pool {pool} in prefect.yaml")
    for name in re.findall(r"`([a-z-]+)` deployment", text):
        if not any(d.endswith(f"/{name}") for d in deployments):
            problems.append(f"the `{name}` deployment is not in prefect.yaml")
    for name in re.findall(r"\(pool `([a-z-]+)`\)", text):
        if name not in pools:
            problems.append(f"no work pool {name} in prefect.yaml")
    return problems


def _after(words: list[str], flag: str) -> str | None:
    return words[words.index(flag) + 1] if flag in words[:-1] else None


@cache
def project_source() -> str:
    """Everything the project's code (and the package's start script) says."""
    files = [
        path
        for folder in CODE_FOLDERS
        for path in (ROOT / folder).rglob("*")
        if path.suffix in (".py", ".sh") and path.is_file()
    ]
    return "\n".join(path.read_text(errors="replace") for path in files)


def _aws_variables() -> set[str]:
    """The variables botocore reads credentials and the profile from."""
    from botocore.configprovider import BOTOCORE_DEFAUT_SESSION_VARIABLES
    from botocore.credentials import EnvProvider

    return {
        EnvProvider.ACCESS_KEY,
        EnvProvider.SECRET_KEY,
        *EnvProvider.TOKENS,
        BOTOCORE_DEFAUT_SESSION_VARIABLES["profile"][1][1],
    }


def variable_problems(text: str) -> list[str]:
    """Every variable the sections name is read by someone."""
    import prefect.settings

    named = set()
    for body in sections(text).values():
        named |= set(re.findall(r"\b((?:DECENTRALML|PREFECT|AWS)_[A-Z0-9_]*[A-Z0-9])\b", body))
    aws = _aws_variables()
    problems = []
    for name in sorted(named):
        if name.startswith("DECENTRALML_") and name not in project_source():
            problems.append(f"${name} is read nowhere in {', '.join(CODE_FOLDERS)}")
        elif name.startswith("PREFECT_") and not hasattr(prefect.settings, name):
            problems.append(f"${name} is not a Prefect setting")
        elif name.startswith("AWS_") and name not in aws:
            problems.append(f"${name} is not read by botocore")
    return problems


def config_problems(text: str) -> list[str]:
    """Every config key the sections name is a field of the config."""
    problems = []
    for body in sections(text).values():
        for section, key in re.findall(
            r"(?<![\w./])(storage|marketplace|task|contributor|training)\.([a-z_]+)", body
        ):
            if key not in _fields(section):
                problems.append(f"no config key {section}.{key}")
    unattended = sections(text)["Running a contributor agent unattended"]
    fields = RunConfig.model_fields["contributor"].annotation.model_fields  # type: ignore[union-attr]
    for key, default in re.findall(r"^\| `([a-z_]+)` \| ([^|]+) \|", unattended, re.M):
        if key not in fields:
            problems.append(f"no config key contributor.{key} (the contributor: table)")
            continue
        written = _default_written(default)
        actual = fields[key].get_default(call_default_factory=True)
        if written is not _UNSAID and written != actual:
            problems.append(f"contributor.{key} defaults to {actual!r}, not {default.strip()}")
    return problems


_UNSAID = object()


def _default_written(cell: str) -> object:
    """The value a default cell of the table states: a number, none, [] (else _UNSAID: prose
    such as another key's name)."""
    first = cell.split()[0].strip("`")
    if re.fullmatch(r"\d+", first):
        return int(first)
    return {"none": None, "[]": []}.get(first, _UNSAID)


def _fields(section: str) -> set[str]:
    return set(RunConfig.model_fields[section].annotation.model_fields)  # type: ignore[union-attr]


def path_problems(text: str) -> list[str]:
    """Every file, folder, module and extra the sections name exists."""
    problems = []
    for body in sections(text).values():
        named = re.findall(r"`(\.?/?[\w.-]+(?:/[\w.-]+)*\.(?:md|py|yaml|yml|sh|toml))`", body)
        named += re.findall(r"\]\(([\w./-]+)\)", body)
        named += re.findall(
            r"(?<![\w./])((?:docs|configs|flows|tests|assets)/[\w./-]*\w\.\w+)", body
        )
        for path in named:
            if not (ROOT / RELATIVE_TO.get(path, path)).exists():
                problems.append(f"{path} does not exist")
        for module in re.findall(r"`(flows\.[\w.]+)(?::[^`]*)?`", body):
            parts = module.split(".")
            if not (ROOT / "/".join(parts)).with_suffix(".py").exists():
                function = parts.pop()
                source = (ROOT / "/".join(parts)).with_suffix(".py")
                if not source.exists() or f"def {function}(" not in source.read_text():
                    problems.append(f"{module} does not exist")
        extras = _extras()
        for extra in re.findall(r"pip install '\.\[(\w+)\]'", body):
            if extra not in extras:
                problems.append(f"pyproject.toml declares no extra [{extra}]")
    return problems


def _extras() -> set[str]:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return set(project["optional-dependencies"])


def _templates(folder: str, keep: Callable[[ast.AST], bool]) -> list[str]:
    """The name templates of ``folder``'s code: f-strings and ``{...}`` strings, ``{}`` for
    each placeholder, and ``artifact_key(run, ...)`` calls joined as the function joins them."""
    found = []
    for path in (ROOT / folder).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not keep(node):
                continue
            if isinstance(node, ast.JoinedStr):
                found.append("".join(_piece(value) for value in node.values))
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.append(re.sub(r"\{[^}]*\}", "{}", node.value))
            elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "artifact_key":
                found.append("-".join(_piece(arg) for arg in node.args))
    return found


def _piece(node: ast.AST) -> str:
    return str(node.value) if isinstance(node, ast.Constant) else "{}"


def _fits(name: str, templates: list[str], placeholder: str = r"[\w.-]+") -> bool:
    """Whether ``name`` (``<run>``-style placeholders allowed) is one a template makes."""
    name = re.sub(r"<[a-z]+>", "x1", name)
    return any(
        re.fullmatch(placeholder.join(map(re.escape, template.split("{}"))), name)
        for template in templates
    )


def names_problems(text: str) -> list[str]:
    """The Prefect task, flow run and artifact names and the log lines the sections show are
    the ones the code makes."""
    tasks = set(re.findall(r'task\(name="([a-z-]+)"', (ROOT / "tasks/creator.py").read_text()))
    runs = _templates("flows", lambda n: isinstance(n, (ast.JoinedStr, ast.Constant)))
    keys = _templates("tasks", lambda n: isinstance(n, ast.Call))
    formats = [
        re.sub(r"%[-.\d]*[sdf]", "{}", template)
        for template in _templates("decentralml/creator", lambda n: isinstance(n, ast.Constant))
    ]
    problems = []
    body = "\n".join(sections(text).values())
    for name in re.findall(r"`([a-z-]+)` task\b", body):
        if name not in tasks:
            problems.append(f"no creator task is named {name}")
    for name in re.findall(r"(?:flow\s+run|run\s+is)(?:\s+named)?\s+`([^`]+)`", body):
        if not _fits(name, runs):
            problems.append(f"no flow run is named like {name}")
    for name in re.findall(r"artifact\s+`([^`]+)`|\(key `([^`]+)`\)", body):
        if not _fits("".join(name), keys):
            problems.append(f"no artifact key is made like {''.join(name)}")
    for line in re.findall(r"`(task \d+: [^`]+)`", body):
        if not _fits(" ".join(line.split()), formats, r".+"):
            problems.append(f"the core logs no line like {line}")
    return problems


CHECKS: tuple[Callable[[str], list[str]], ...] = (
    cli_problems,
    prefect_problems,
    deployment_problems,
    variable_problems,
    config_problems,
    path_problems,
    names_problems,
)


# --- the tests ---------------------------------------------------------------------------------


def test_the_sections_hold_the_commands_they_document() -> None:
    """The extraction itself: what the four sections hold (so an empty match proves nothing)."""
    lines = [command.line for command in commands(readme())]
    argvs = [command.argv for command in commands(readme())]
    assert sum(argv[:1] == ["decentralml"] for argv in argvs) >= 4, lines
    assert any("prefect deployment run creator-next-round" in line for line in lines), lines
    assert any("prefect --no-prompt deploy --all" in line for line in lines), lines
    assert any(line.startswith("DECENTRALML_WORKDIR=$PWD prefect worker") for line in lines)


@pytest.mark.parametrize("check", CHECKS, ids=[check.__name__ for check in CHECKS])
def test_the_readme_matches_the_code(check: Callable[[str], list[str]]) -> None:
    assert check(readme()) == []


def test_the_team_shares_one_auth_string() -> None:
    """Shell 1 starts the server with the string shell 2's clients send."""
    found = {c.env.get(v) for c in commands(readme()) for v in c.env if "AUTH_STRING" in v}
    assert len(found) == 1, found


DRIFTS = [
    ("decentralml contribute --index 0", "decentralml contribute --shard 0", cli_problems),
    ("--min-reward-per-result`", "--min-reward`", cli_problems),
    ("--pool decentralml-creator", "--work-pool decentralml-creator", prefect_problems),
    ("--no-prompt deploy --all", "--no-prompt deploy --every", prefect_problems),
    ("creator-train-from-config/creator-train", "creator-train/creator-train", deployment_problems),
    ("-p contributors=2\n", "-p slots=2\n", deployment_problems),
    ("create decentralml-contributors", "create decentralml-contributor", deployment_problems),
    ("DECENTRALML_RESULTS_URL=", "DECENTRALML_RESULT_URL=", variable_problems),
    ("PREFECT_API_AUTH_STRING=", "PREFECT_API_AUTH=", variable_problems),
    ("`storage.accept_uploads: false`", "`storage.uploads: false`", config_problems),
    ("| `idle_timeout_seconds` |", "| `idle_seconds` |", config_problems),
    ("| 604800 (7 days) |", "| 86400 (1 day) |", config_problems),
    ("| `max_concurrent_tasks` | 1 |", "| `max_concurrent_tasks` | 4 |", config_problems),
    ("[docs/storage.md](docs/storage.md)", "[docs/storage.md](docs/s3.md)", path_problems),
    ("(`flows/scheduled.py`)", "(`flows/schedule.py`)", path_problems),
    ("`wait-for-results` task", "`wait-for-result` task", names_problems),
    ("run `mnist-round-1-task-0`", "run `mnist-task-0-round-1`", names_problems),
    ("`<run>-next-round-<n>`", "`next-round-<n>-of-<run>`", names_problems),
    ("`mnist-round-1-progress`", "`mnist-progress-round-1`", names_problems),
    ("(key `<run>-metric-chart`)", "(key `<run>-chart`)", names_problems),
    ("`task 0: 1/2 slots taken", "`task 0: 1/2 slots held", names_problems),
    ("a chain and S3:\ndocs/deployment.md", "a chain and S3:\ndocs/deploy.md", path_problems),
]


@pytest.mark.parametrize("before, after, check", DRIFTS, ids=[d[1] for d in DRIFTS])
def test_a_drifted_readme_fails(before: str, after: str, check) -> None:
    """Each check catches an edit of the kind the outside run found: the README as it is
    passes it (above), a copy with one word changed does not."""
    text = readme()
    assert text.count(before) >= 1, f"the README no longer says {before!r}: update DRIFTS"
    assert check(text.replace(before, after, 1)) != []


# --- run for real ------------------------------------------------------------------------------


def _as_written(command: Command, env: dict[str, str]) -> subprocess.CompletedProcess:
    """The README's line, run from the project folder with its own variables, except the
    server's address and credentials (the fixture's server, on a free port)."""
    variables = {**command.env, **env}
    argv = [PREFECT if command.argv[0] == "prefect" else command.argv[0], *command.argv[1:]]
    return subprocess.run(
        argv, env=variables, cwd=ROOT, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
@pytest.mark.integration
def test_the_creator_commands_run_as_written(prefect_server: dict) -> None:
    """Shell 2 (all but the worker) and the scheduled rounds' commands, in the README's order,
    against a real server with basic auth: each succeeds, and each run names a real deployment
    with parameters the server accepts."""
    text = readme()
    body = sections(text)["Run on several machines"]
    shell_2 = [parse_line(line) for line in fenced_lines(body)]
    exported = next(c for c in shell_2 if c.line.startswith("export"))
    assert set(exported.env) == {"PREFECT_API_URL", "PREFECT_API_AUTH_STRING"}, exported.line
    to_run = [c for c in shell_2 if c.argv[:1] == ["prefect"] and "start" not in c.argv]
    to_run += [parse_line(s) for s in inline_commands(sections(text)["Rounds on a schedule"])]
    assert len(to_run) == 7, [c.line for c in to_run]
    listed = ""  # what `schedule ls` printed
    for command in to_run:
        if command.argv[-1] == "ID":  # the schedule's id, from that listing
            command.argv[-1] = _schedule_id(listed)
        done = _as_written(command, prefect_server)
        output = done.stdout[-1500:] + done.stderr[-1500:]
        assert done.returncode == 0, f"`{command.line}`:\n{output}"
        if "ls" in command.argv:
            listed = done.stdout
        if "run" in command.argv and "deployment" in command.argv:
            assert "Created flow run" in done.stdout, done.stdout


def _schedule_id(listed: str) -> str:
    found = re.findall(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", listed)
    assert found, listed
    return found[0]


@pytest.mark.slow
def test_the_unattended_contributor_lists_tasks_named_only_by_the_environment(
    tmp_path: Path,
) -> None:
    """The first block of "Running a contributor agent unattended", its placeholders (the
    chain's URL, the mnemonic) replaced by an embedded marketplace holding one open task and a
    fresh mnemonic, run from an empty folder: no config file."""
    from substrateinterface import Keypair

    from decentralml.marketplace.embedded import EmbeddedMarketplace
    from decentralml.protocol.accounts import dev_keypair
    from decentralml.protocol.records import TaskSpec

    market_file = tmp_path / "marketplace.sqlite"
    market = EmbeddedMarketplace(market_file)
    alice = dev_keypair("Alice")
    market.fund(alice.ss58_address, 1000)
    task_id = market.create_task(alice, TaskSpec("q", 300, 3, market.current_block() + 100))
    body = sections(readme())["Running a contributor agent unattended"]
    block = [parse_line(line) for line in fenced_lines(body)][:4]
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    for command in block[:2]:
        assert command.line.startswith("export"), command.line
        env |= command.env
    env["DECENTRALML_MARKETPLACE_URL"] = str(market_file)
    env["DECENTRALML_CONTRIBUTOR_URI"] = Keypair.generate_mnemonic()
    listing = block[2]
    assert listing.argv == ["decentralml", "tasks"], listing.line
    cli = str(Path(sys.executable).with_name("decentralml"))
    folder = tmp_path / "empty"
    folder.mkdir()
    done = subprocess.run(
        [cli, *listing.argv[1:]], env=env, cwd=folder, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(rf"^\s*{task_id}\b", done.stdout, re.M), done.stdout
    columns = listing.line.split("#", 1)[1].split(", ")  # the comment names the columns
    assert done.stdout.splitlines()[0].split() == " ".join(columns).split(), done.stdout
