"""What the package ships besides code: the contributor's and creator's assets and the
default configs, found with importlib.resources so an installed (non-editable) decentralml
works from any directory.

In the repository, ``decentralml/assets`` and ``decentralml/configs`` are symlinks to the
top-level ``assets/`` and ``configs/`` folders: one copy of each file, which users edit and
read at the top level and which the wheel carries as package data (pyproject's
``[tool.setuptools.package-data]``; building the wheel follows the links). Only a package
installed as files is supported: the assets are handed to tar and to a shell, which need
real paths, not a zip's members.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

CONFIGS = "configs"
"""The folder a shipped config is named from, in the cwd and in the package alike."""


def shipped(*parts: str) -> Path:
    """A file or folder the package ships, e.g. ``shipped("configs", "mnist.yaml")``."""
    return Path(str(files("decentralml").joinpath(*parts)))


def contributor_assets(workload: str = "mnist") -> Path:
    """The folder the contributor package is built from (the seed's model_contributor)."""
    return shipped("assets", workload, "model_contributor")


def config_path(path: str | Path) -> Path:
    """The file a config path names: as given, from the cwd, when it exists there (a user's
    own or edited copy wins); else ``configs/NAME`` is the shipped config of that name, so
    the default ``configs/mnist.yaml`` works from any directory. Any other missing path is
    returned unchanged, for the caller to report as missing."""
    given = Path(path)
    if given.exists() or given.is_absolute() or given.parent != Path(CONFIGS):
        return given
    packaged = shipped(CONFIGS, given.name)
    return packaged if packaged.is_file() else given
