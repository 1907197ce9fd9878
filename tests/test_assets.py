"""The creator's asset script (assets/mnist/model_creator/model_creator.py), the seed's
functions with safe storage: save, load contributors' weights, federate, set."""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest

from decentralml.io.weights import encode
from decentralml.ml.models import model_tensors
from decentralml.protocol.errors import IntegrityError
from tests.helpers import ROOT

CREATOR_DIR = ROOT / "assets" / "mnist" / "model_creator"


@pytest.fixture(scope="module")
def model_creator():
    sys.path.insert(0, str(CREATOR_DIR))
    try:
        yield importlib.import_module("model_creator")
    finally:
        sys.path.remove(str(CREATOR_DIR))
        sys.modules.pop("model_creator", None)
        sys.modules.pop("settings", None)


def test_seed_functions_save_load_federate_and_set(model_creator, tmp_path):
    model = model_creator.create_model()
    weights_file = model_creator.save_model(model, tmp_path / "out", "mnist")
    assert (tmp_path / "out" / "mnist.keras").is_file() and weights_file.is_file()

    base = model_tensors(model)
    for name, value, examples in (("a", 1.0, 10), ("b", 3.0, 30)):
        tensors = {k: np.full_like(v, value) for k, v in base.items()}
        (tmp_path / f"mnist_{name}.safetensors").write_bytes(
            encode(tensors, {"num_examples": examples})
        )
    contributions = model_creator.load_contributors_models(tmp_path, "mnist", model)
    assert sorted(c.num_examples for c in contributions) == [10, 30]

    averaged = model_creator.federate_contributors_model(contributions, policy="average")
    weighted = model_creator.federate_contributors_model(contributions, policy="fedavg")
    assert np.allclose(averaged["001.bias"], 2.0) and np.allclose(weighted["001.bias"], 2.5)
    model_creator.set_model_weights(model, weighted)
    assert np.allclose(model_tensors(model)["000.kernel"], 2.5)


def test_contributor_weights_that_do_not_fit_are_refused(model_creator, tmp_path):
    model = model_creator.create_model()
    (tmp_path / "mnist_bad.safetensors").write_bytes(encode({"000.kernel": np.zeros(3)}))
    with pytest.raises(IntegrityError, match="missing"):
        model_creator.load_contributors_models(tmp_path, "mnist", model)
