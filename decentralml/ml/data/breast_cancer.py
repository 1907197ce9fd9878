"""The Wisconsin breast-cancer table shipped inside scikit-learn
(``sklearn.datasets.load_breast_cancer``, read from the installed package: no download).

569 tumours, 30 real-valued features, benign or malignant. The features span four orders of
magnitude, so they are standardized; the creator computes mean and scale on its own held-out
split and ships the numbers in the task settings, and every contributor applies the same ones.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np

from decentralml.ml.data.base import Dataset, DataSpec, Split, standardize_on
from decentralml.protocol.errors import DataError

TEST_FRACTION = 0.2
_SPLIT_SEED = 0  # a fixed test set, whatever the training's seed


@cache
def load(cache_dir: Path | str | None = None) -> tuple[Split, Split]:
    """``((x_train, y_train), (x_test, y_test))``: 455 / 114 rows, float64 features and int64
    labels (0 malignant, 1 benign), split once by a fixed permutation."""
    try:
        from sklearn.datasets import load_breast_cancer
    except ImportError:  # a contributor's light install (pyproject.toml: the creator extra)
        raise DataError(
            "the breast_cancer workload reads its table from scikit-learn, which is not "
            "installed: pip install scikit-learn (or decentralml[creator])"
        ) from None

    x, y = load_breast_cancer(return_X_y=True)
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(y))
    test = round(len(y) * TEST_FRACTION)
    train_rows, test_rows = np.sort(order[test:]), np.sort(order[:test])
    y = y.astype(np.int64)
    return (x[train_rows], y[train_rows]), (x[test_rows], y[test_rows])


BREAST_CANCER = Dataset(
    name="breast_cancer",
    description="Wisconsin breast cancer, 30 features, 455 train / 114 test (scikit-learn)",
    spec=DataSpec(input_shape=(30,), dtype="float64", labels=(0, 1)),
    load=load,
    fit_preprocessing=standardize_on,
)
