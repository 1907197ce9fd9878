"""The contributor's task script: train the creator's model on this contributor's shard.

Keeps the seed's function names (load_data, load_model, train_model, save_model) but saves
weights only, as safetensors, and sends them through the decentralml client. Run it with
./start_task.sh --task-id N --shard-index I [--config configs/mnist.yaml].
"""

from __future__ import annotations

import argparse
import secrets
import string
import sys
from functools import cache
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import settings

from decentralml.contributor import Contributor, contribute_once
from decentralml.io.weights import decode, encode
from decentralml.ml.data.federated import contributor_shard, test_split
from decentralml.ml.data.shared_slice import read_slice, with_slice
from decentralml.ml.models import build_model, model_tensors, set_model_tensors
from decentralml.ml.task_settings import TaskSettings
from decentralml.ml.workloads import register_architecture
from decentralml.protocol.errors import DecentralMLError, TaskRefused
from decentralml.runtime.backends import contributor_keypair, open_marketplace, open_store
from decentralml.runtime.config import load_config


@cache
def task_settings() -> TaskSettings:
    """settings.py's task.json, parsed and bounded (TaskRefused, one line, for a bad file)."""
    return TaskSettings.parse(settings.SETTINGS)


def load_data(shard_index: int):
    """This contributor's shard of the training set plus the task's shared slice if the
    package ships one (checked: TaskRefused, one line), and the test set (preprocessed as the
    task says: MNIST x / 255, the breast-cancer table standardized)."""
    data = task_settings().data
    shared = None
    if data.shared_slice is not None:
        path = Path(__file__).resolve().parent / data.shared_slice.file
        if not path.is_file():
            raise TaskRefused(f"task's shared slice refused: the package has no {path.name}")
        shared = read_slice(path.read_bytes(), data)
    train = with_slice(contributor_shard(data, shard_index), shared)
    return train, test_split(None, data.source, data.preprocessing)


def load_model(weights_path: str | Path):
    """The creator's model, compiled, with the global weights from a safetensors file."""
    if task_settings().architecture is not None:  # a creator's own model: rebuilt, no code
        register_architecture(task_settings())
    model = build_model(settings.MODEL_NAME, settings.LEARNING_RATE)
    set_model_tensors(model, decode(Path(weights_path).read_bytes()))
    return model


def train_model(
    model, x_train, y_train, epoch: int = settings.EPOCHS, batch_size: int = settings.BATCH_SIZE
):
    model.fit(x_train, y_train, epochs=epoch, batch_size=batch_size, verbose=2)
    return model


def save_model(
    model, output_path: str | Path, model_name: str, contributor_id_length: int = 10
) -> Path:
    """Save the weights (never the code) as <model_name>_<random id>.safetensors."""
    alphabet = string.ascii_lowercase
    contributor_id = "".join(secrets.choice(alphabet) for _ in range(contributor_id_length))
    target = Path(output_path) / f"{model_name}_{contributor_id}.safetensors"
    target.write_bytes(encode(model_tensors(model)))
    return target


def main(argv: list[str] | None = None) -> int:
    """Exit status 2 and one line for a refusal this package raises on purpose (a bad config,
    missing storage credentials, a task that is full): no traceback."""
    try:
        return contribute(argv)
    except DecentralMLError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def contribute(argv: list[str] | None = None) -> int:
    """The contributor procedure (decentralml.contributor.procedure), as every contributor
    runs it: the task is checked before a slot is taken, the result committed before upload."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task-id", type=int, required=True)
    parser.add_argument("--shard-index", type=int, default=0)
    parser.add_argument("--config", default="configs/mnist.yaml")
    args = parser.parse_args(argv)

    config = load_config(args.config)
    market = open_marketplace(config.marketplace)
    contributor = Contributor(
        market,
        open_store(config.storage),
        contributor_keypair(config.marketplace, None),
        args.shard_index,
        config.data.cache_dir,
        config.contributor,
    )
    receipt = contribute_once(contributor, market.get_task(args.task_id))
    assert receipt is not None  # no stop signal: a checked task is finished
    print(
        f"submission {receipt.submission_id}: {receipt.num_examples} examples sent "
        f"({receipt.metrics})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
