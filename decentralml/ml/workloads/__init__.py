"""Workloads: what a federated training trains: a model, its data and its primary metric.

One module per workload (``mnist_mlp``, ``mnist_cnn``, ``breast_cancer``), each defining a
``WORKLOAD``; ``register`` adds one, ``get`` finds one by name, ``names`` lists them. A creator
can also name its own workload as ``package.module:attribute``, or by the name an installed
distribution publishes it under in the entry-point group ``decentralml.workloads`` (both
imported on the creator's machine only): contributors receive its model as an architecture
description (``architecture.py``) and bring their own data unless its dataset is a built-in
one.

This is the one registry of names a task's ``model`` can take: ``build_model`` and
``available_models`` (re-exported by ``decentralml.ml.models``) read the built-in workloads and
the architecture descriptions tasks registered (``register_architecture``). Datasets are
looked up by name in ``decentralml.ml.data.datasets``, below this package: a workload's dataset is
registered there, so the data functions resolve a task's ``source`` without importing this.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING

from decentralml.ml.data import datasets
from decentralml.ml.data.datasets import builtin_datasets, dataset, task_preprocessing
from decentralml.ml.data.federated import holdout_and_pool
from decentralml.ml.data.local_data import load_local_data
from decentralml.ml.workloads import breast_cancer, mnist_cnn, mnist_mlp
from decentralml.ml.workloads.architecture import describe, rebuild
from decentralml.ml.workloads.base import Dataset, DataSpec, Preprocessing, Split, Workload, prepare
from decentralml.protocol.errors import ConfigError, TaskRefused

if TYPE_CHECKING:
    import keras

    from decentralml.ml.task_settings import DataSettings, TaskSettings

__all__ = [
    "DataSpec",
    "Dataset",
    "ModelBuilder",
    "Workload",
    "available_models",
    "build_model",
    "builtin_datasets",
    "dataset",
    "get",
    "is_builtin",
    "load_local_data",
    "model_settings",
    "names",
    "prepare",
    "register",
    "register_architecture",
    "task_preprocessing",
]

DEFAULT = "mnist_mlp"
ENTRY_POINT_GROUP = "decentralml.workloads"
"""Where a distribution publishes workloads: ``name = package.module:attribute``."""
ModelBuilder = Callable[[float], "keras.Model"]
"""``learning_rate -> compiled keras.Model``."""
_WORKLOADS: dict[str, Workload] = {}
_IMPORTED: dict[str, Workload] = {}
_ARCHITECTURES: dict[str, ModelBuilder] = {}
"""Models tasks sent as architecture descriptions, by content address: buildable by name like
a built-in workload's model, but with no dataset of their own, so no workload."""


def register(workload: Workload) -> Workload:
    """Add a built-in workload: contributors build its model by its name and load its dataset
    by the dataset's name."""
    _WORKLOADS[workload.name] = workload
    datasets.register(workload.dataset)
    return workload


for _module in (mnist_mlp, mnist_cnn, breast_cancer):
    register(_module.WORKLOAD)


def names() -> list[str]:
    return sorted(_WORKLOADS)


def is_builtin(name: str) -> bool:
    return name in _WORKLOADS


def get(name: str) -> Workload:
    """A built-in workload, a published one (entry point) or ``package.module:attribute``
    imported from the creator's own code; ConfigError (one line) for a name that is none of
    these or whose code cannot be loaded."""
    if name in _WORKLOADS:
        return _WORKLOADS[name]
    if name not in _IMPORTED:
        _IMPORTED[name] = _adopt(_load(name))
    return _IMPORTED[name]


def published() -> dict[str, EntryPoint]:
    """The workloads installed distributions publish, by name. A built-in's name is not
    published over it: the built-in is what that name means."""
    found = {point.name: point for point in entry_points(group=ENTRY_POINT_GROUP)}
    return {name: point for name, point in sorted(found.items()) if name not in _WORKLOADS}


def _load(name: str) -> Workload:
    if ":" in name:
        return _import(name, f"workload {name!r}")
    point = published().get(name)
    if point is None:
        raise ConfigError(
            f"unknown workload {name!r}; built-in workloads: {', '.join(names())}"
            + "".join(f", {found} (published)" for found in published())
            + " (or package.module:attribute for your own)"
        )
    origin = point.dist.name if point.dist is not None else "an installed distribution"
    return _import(point.value, f"workload {name!r} (entry point {point.value} of {origin})")


def _adopt(workload: Workload) -> Workload:
    # The creator's own dataset becomes loadable here, on the creator's machine (its splits);
    # contributors never import the module, so they bring their own data.
    datasets.register(workload.dataset)
    return workload


def _import(target: str, label: str) -> Workload:
    """``target`` (module:attribute) imported; any error its module raises on import is the
    workload's problem, reported in one line starting with ``label``."""
    module_name, _, attribute = target.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except Exception as error:  # a broken third-party module may raise anything on import
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        raise ConfigError(f"{label} cannot be imported: {reason}") from None
    if not isinstance(found, Workload):
        raise ConfigError(f"{label} is a {type(found).__name__}, not a Workload")
    return found


def available_models() -> list[str]:
    """The model names this process builds: built-in workloads and registered architectures."""
    return sorted([*_WORKLOADS, *_ARCHITECTURES])


def build_model(name: str, learning_rate: float = 0.001) -> keras.Model:
    """Build and compile a model by name; unknown names list the known ones."""
    workload = _WORKLOADS.get(name)
    builder = workload.build_model if workload is not None else _ARCHITECTURES.get(name)
    if builder is None:
        raise ValueError(f"unknown model {name!r}; known models: {available_models()}")
    return builder(learning_rate)


def model_settings(name: str, learning_rate: float) -> dict[str, object]:
    """How the task names its model: a built-in by name; a creator's own as an architecture
    description (built once here, on the creator's machine, to describe it)."""
    if is_builtin(name):
        return {"model": name}
    return dict(_described(name, learning_rate))


@cache
def _described(name: str, learning_rate: float) -> Mapping[str, object]:
    return describe(get(name).build_model(learning_rate))


def register_architecture(settings: TaskSettings) -> None:
    """Make a task's architecture description buildable by its (content-addressed) model name,
    refusing code and custom objects (TaskRefused, one line)."""
    described = (settings.model, settings.architecture, settings.from_logits)
    rebuild(*described, 0.001)  # refuses before anything is registered
    if settings.model not in available_models():
        _ARCHITECTURES[settings.model] = lambda rate: rebuild(*described, rate)


def data_settings(
    workload: Workload, holdout_examples: int, seed: int, cache_dir: Path | str | None
) -> dict[str, object]:
    """The task's data description: source, spec and the preprocessing (computed from the
    creator's held-out split when the dataset needs it, e.g. a standardizer)."""
    data = workload.dataset
    return {
        "source": data.name,
        "spec": data.spec.to_settings(),
        "preprocessing": creator_preprocessing(data, holdout_examples, seed, cache_dir),
    }


def creator_preprocessing(
    data: Dataset, holdout_examples: int, seed: int, cache_dir: Path | str | None
) -> Preprocessing:
    if data.fit_preprocessing is None:
        return dict(data.preprocessing)
    (x_train, y_train), _ = data.load(cache_dir)
    held, _ = holdout_and_pool(len(y_train), holdout_examples, seed)
    return data.fit_preprocessing(x_train[held])


def local_split(path: str | Path, data: DataSettings) -> Split:
    """A contributor's own file as model input: checked against the task's spec (DataError,
    one line), then preprocessed as the task says."""
    if data.spec is None:
        raise TaskRefused("task data settings refused: data spec is missing")
    x, y = load_local_data(path, data.spec)
    return prepare(x, task_preprocessing(data.source, data.preprocessing)), y
