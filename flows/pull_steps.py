"""Pull steps for prefect.yaml that hold no path of the deployer's machine.

Prefect resolves ``{{ $VAR }}`` in a pull step when deploying, so
``set_working_directory: {directory: "{{ $DIR }}"}`` stores the deployer's folder and a worker
elsewhere fails. This step reads its variable on the worker, at run time.
"""

from __future__ import annotations

import os
from pathlib import Path

WORKDIR_VARIABLE = "DECENTRALML_WORKDIR"


def enter_workdir(variable: str = WORKDIR_VARIABLE) -> dict[str, str]:
    """Enter the folder ``$variable`` names on this worker (its configs and relative state:
    ``.decentralml/``), else stay in the run's own folder (a process worker's temporary one,
    fine when the config uses absolute paths or URLs only). Returns ``directory`` for later
    steps, as Prefect's ``set_working_directory`` does."""
    directory = os.environ.get(variable, "").strip()
    if directory:
        path = Path(directory).expanduser()
        if not path.is_dir():
            raise NotADirectoryError(f"{variable}={directory} is not a folder on this worker")
        os.chdir(path)
    return {"directory": os.getcwd()}
