"""The creator's model code, with the seed's function names (assets/model_creator/model_creator.py).

What changed from the seed, and why:
- save_model writes `<name>.keras` (Keras 3 refuses a bare folder) and a safetensors copy of
  the weights, which is what contributors receive.
- load_contributors_models reads contributors' safetensors weights and checks them against the
  creator's model; it never loads a contributor's SavedModel (that would run their code).
- federate_contributors_model averages all weights, weighted by examples under "fedavg"; any
  other strategy name (median, trimmed_mean, krum, multi_krum) works too.
The flows (flows/creator.py) do the same through decentralml's core; this file is the small,
readable version for a creator who scripts by hand.
"""

from __future__ import annotations

import glob
from pathlib import Path

import settings

from decentralml.io.weights import check_against, decode, encode, layout_of, read_metadata
from decentralml.ml.models import build_model, evaluate, model_tensors, set_model_tensors
from decentralml.strategies import Contribution, get_strategy


def create_model():
    return build_model(settings.MODEL_NAME, settings.LEARNING_RATE)


def train_model(model, x_train, y_train, epochs: int = 1):
    model.fit(x_train, y_train, epochs=epochs, batch_size=settings.BATCH_SIZE)
    return model


def evaluate_model(model, x_test, y_test) -> dict:
    return evaluate(model, x_test, y_test)


def save_model(model, output_path: str | Path, model_name: str) -> Path:
    folder = Path(output_path)
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / f"{model_name}.keras")
    weights = folder / f"{model_name}.safetensors"
    weights.write_bytes(encode(model_tensors(model)))
    return weights


def load_contributors_models(
    contributors_models_path: str | Path, model_name: str, model
) -> list[Contribution]:
    """Contributors' weights (safetensors) that fit ``model``; others are skipped with a reason."""
    layout = layout_of(model_tensors(model))
    contributions = []
    for path in sorted(glob.glob(f"{contributors_models_path}/{model_name}_*.safetensors")):
        data = Path(path).read_bytes()
        tensors = decode(data)
        check_against(tensors, layout)
        num_examples = int(read_metadata(data).get("num_examples", 1))
        contributions.append(Contribution(tensors, num_examples))
    return contributions


def federate_contributors_model(
    contributors_models: list[Contribution],
    policy: str = "average",
    global_model=None,
    round_number: int = 1,
):
    """Aggregate with the strategy named ``policy``; the round's global weights come from
    ``global_model`` (the averaging and robust rules do not read them; norm clipping and the
    server optimizers fedavgm, fedadam, fedyogi, fedadagrad need them). A fresh strategy per
    call: a stateful one starts from zero state each time (the flows keep one per training)."""
    global_tensors = model_tensors(global_model) if global_model is not None else {}
    return get_strategy(policy).aggregate(round_number, global_tensors, contributors_models)


def set_model_weights(model, weights):
    set_model_tensors(model, weights)
    return model
