"""The datasets a task can name as its ``source``: the built-ins (MNIST, the breast-cancer
table) and any a workload adds (``register``), looked up by name.

The shards, the held-out split and the shared slice (``decentralml.ml.data.federated``,
``decentralml.ml.data.shared_slice``) resolve a task's ``source`` here, so they need no
knowledge of workloads; the workload registry (``decentralml.ml.workloads``) registers each
workload's dataset here, downwards.
"""

from __future__ import annotations

from collections.abc import Mapping

from decentralml.ml.data.base import Dataset, DataSpec, Preprocessing
from decentralml.ml.data.breast_cancer import BREAST_CANCER
from decentralml.ml.data.mnist import load_mnist
from decentralml.protocol.errors import TaskRefused

MNIST = Dataset(
    name="mnist",
    description="MNIST digits, 60 000 train / 10 000 test (offline, decentralml/ml/data/mnist.py)",
    spec=DataSpec(input_shape=(28, 28), dtype="uint8", labels=tuple(range(10))),
    load=load_mnist,
    preprocessing={"kind": "rescale", "divisor": 255.0},  # the seed's x / 255.0
)

_DATASETS: dict[str, Dataset] = {}


def register(data: Dataset) -> None:
    """Make ``data`` loadable by its name; a name already taken keeps its first dataset."""
    _DATASETS.setdefault(data.name, data)


for _data in (MNIST, BREAST_CANCER):
    register(_data)


def dataset(name: str) -> Dataset:
    """A built-in dataset: the only data a contributor loads without bringing its own."""
    try:
        return _DATASETS[name]
    except KeyError:
        raise TaskRefused(
            f"the task's data source {name!r} is not a built-in dataset "
            f"({', '.join(sorted(_DATASETS))}): contribute with your own data (--data PATH)"
        ) from None


def builtin_datasets() -> list[str]:
    return sorted(_DATASETS)


def task_preprocessing(source: str, preprocessing: Mapping[str, object] | None) -> Preprocessing:
    """The preprocessing a task's data settings name; a task from before workloads (no
    ``preprocessing``) used its dataset's default (MNIST: x / 255)."""
    if preprocessing is not None:
        return dict(preprocessing)
    return dict(dataset(source).preprocessing)
