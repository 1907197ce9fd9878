"""What a workload is: a model builder, a dataset (``decentralml.ml.data.base``) and a metric.

The data types are defined in ``decentralml.ml.data.base`` and re-exported here, so a creator's own
workload module needs one import (``from decentralml.ml.workloads.base import Dataset, DataSpec,
Workload``). A creator's own model reaches contributors as a Keras architecture description
(``decentralml.ml.workloads.architecture``), never as code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from decentralml.ml.data.base import (
    Dataset,
    DataSpec,
    Preprocessing,
    Split,
    prepare,
    standardize_on,
)

if TYPE_CHECKING:
    import keras

__all__ = [
    "DataSpec",
    "Dataset",
    "Preprocessing",
    "Split",
    "Workload",
    "prepare",
    "standardize_on",
]


@dataclass(frozen=True)
class Workload:
    """A model, its data and the metric validators, reports and the UI show.

    name: the registry name (``workload:`` in a config; ``model.name`` is its alias).
    model: one line describing the model, for ``decentralml workloads``.
    build_model: ``learning_rate -> compiled keras.Model`` (sparse labels; logits or softmax).
    primary_metric: what validators (``min_accuracy``) read from the held-out metrics and
        what reports and the UI show: one of the higher-is-better metrics the evaluation
        computes (``decentralml.ml.models.SCORES``), "accuracy" here.
    config: dotted config overrides ``--workload NAME`` applies so the built-in configs fit
        its data (a held-out split smaller than the dataset, a question about it).
    """

    name: str
    model: str
    dataset: Dataset
    build_model: Callable[[float], keras.Model]
    primary_metric: str = "accuracy"
    config: Mapping[str, object] = field(default_factory=dict, hash=False)
