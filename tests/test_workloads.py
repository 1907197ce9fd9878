"""Workloads (decentralml/ml/workloads/): the registry and its CLI listing, the built-ins'
models, a creator's own workload from a module outside the package shipped as an architecture
description, contributors' own data files checked against the task's data spec."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from decentralml.ml import workloads
from decentralml.ml.data import datasets
from decentralml.ml.workloads import DataSpec
from decentralml.ml.workloads.architecture import describe, rebuild
from decentralml.ml.workloads.local_data import load_local_data
from decentralml.protocol.errors import ConfigError, DataError, TaskRefused
from decentralml.runtime.config import parse_config
from decentralml_cli import main
from tests.helpers import small_config, write_config

MNIST_SPEC = DataSpec((28, 28), "uint8", tuple(range(10)))


def test_the_registry_lists_the_three_built_ins_and_refuses_an_unknown_name() -> None:
    assert workloads.names() == ["breast_cancer", "mnist_cnn", "mnist_mlp"]
    assert workloads.get("mnist_cnn").dataset is workloads.get("mnist_mlp").dataset
    with pytest.raises(ConfigError, match="unknown workload 'resnet'; built-in workloads: br"):
        workloads.get("resnet")
    with pytest.raises(ConfigError, match="cannot be imported: No module named 'nowhere'"):
        workloads.get("nowhere.mod:WORKLOAD")


def test_decentralml_workloads_lists_name_data_metric_and_input(capsys) -> None:
    assert main(["workloads"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "data", "metric", "input", "model"]
    rows = {line.split()[0]: line.split()[1:5] for line in lines[1:]}
    assert rows == {
        "breast_cancer": ["breast_cancer", "accuracy", "30", "float64"],
        "mnist_cnn": ["mnist", "accuracy", "28x28", "uint8"],
        "mnist_mlp": ["mnist", "accuracy", "28x28", "uint8"],
    }


def test_workload_and_its_older_spelling_model_name() -> None:
    assert parse_config({}).workload_name == "mnist_mlp"  # existing configs: nothing changes
    assert parse_config({"model": {"name": "mnist_cnn"}}).workload_name == "mnist_cnn"
    assert parse_config({"workload": "breast_cancer"}).workload_name == "breast_cancer"
    both = parse_config({"workload": "breast_cancer", "model": {"name": "mnist_mlp"}})
    assert both.workload_name == "breast_cancer"  # the shipped configs keep model.name


def test_an_unknown_workload_or_foreign_data_source_is_one_line_exit_2(tmp_path, capsys) -> None:
    path, _ = write_config(tmp_path, workload="resnet")
    assert main(["train", "--config", str(path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"error: invalid configuration in {path}: workload: unknown workload")
    assert len(error.splitlines()) == 1
    path, _ = write_config(tmp_path, workload="breast_cancer")  # the file says source: mnist
    assert main(["train", "--config", str(path)]) == 2
    assert "data.source: 'mnist' is not the data of workload 'breast_cancer'" in (
        capsys.readouterr().err
    )


def test_breast_cancer_data_is_standardized_with_the_creators_own_numbers() -> None:
    from decentralml.creator import task_settings

    config = parse_config({"workload": "breast_cancer", "data": {"holdout_examples": 100}})
    data = task_settings(config).data
    assert data.source == "breast_cancer"
    assert data.spec == DataSpec((30,), "float64", (0, 1))
    from decentralml.ml.data.federated import contributor_shard, creator_holdout

    x_held, _ = creator_holdout(100, config.data.seed, None, "breast_cancer", data.preprocessing)
    np.testing.assert_allclose(x_held.mean(axis=0), 0, atol=1e-5)  # fitted on this split
    x_shard, y_shard = contributor_shard(data.model_copy(update={"num_partitions": 5}), 0)
    assert x_shard.dtype == np.float32 and set(np.unique(y_shard)) == {0, 1}
    assert np.abs(x_shard.mean()) < 0.5  # same scaler: the shard is standardized too


# --- contributors' own data ------------------------------------------------------------------


def test_an_npz_and_a_csv_are_read_as_the_task_spec_says(tmp_path: Path) -> None:
    x = np.random.default_rng(0).integers(0, 256, size=(6, 28, 28)).astype(np.uint8)
    y = np.array([0, 1, 2, 3, 4, 9])
    np.savez(tmp_path / "mine.npz", x=x, y=y)
    got_x, got_y = load_local_data(tmp_path / "mine.npz", MNIST_SPEC)
    assert got_x.dtype == np.uint8 and np.array_equal(got_x, x) and got_y.tolist() == y.tolist()
    header = ",".join([*(f"p{i}" for i in range(784)), "label"])
    rows = [
        ",".join([*map(str, image.ravel()), str(label)]) for image, label in zip(x, y, strict=True)
    ]
    (tmp_path / "mine.csv").write_text("\n".join([header, *rows]) + "\n")
    csv_x, csv_y = load_local_data(tmp_path / "mine.csv", MNIST_SPEC)  # 784 columns -> 28x28
    assert np.array_equal(csv_x, x) and csv_y.tolist() == y.tolist()


@pytest.mark.parametrize(
    ("x", "y", "why"),
    [
        (np.zeros((4, 32, 32), np.uint8), np.zeros(4), "examples have shape (32, 32), the task"),
        (np.zeros((4, 28, 28), np.uint8), np.array([0, 1, 2, 10]), "labels [10] are not in the"),
        (np.full((4, 28, 28), 0.5), np.zeros(4), "does not fit the task's dtype uint8"),
        (np.full((4, 28, 28), 300.0), np.zeros(4), "does not fit the task's dtype uint8"),
        (np.zeros((4, 28, 28), np.uint8), np.zeros(3), "the same number (> 0) of examples"),
        (np.zeros((4, 28, 28), np.uint8), np.array([0.5, 0, 0, 0]), "labels must be whole"),
    ],
    ids=["shape", "label", "fraction", "range", "count", "label-fraction"],
)
def test_data_that_does_not_fit_the_spec_is_refused_in_one_line(tmp_path, x, y, why) -> None:
    np.savez(tmp_path / "bad.npz", x=x, y=y)
    with pytest.raises(DataError, match=f"^local data {tmp_path}/bad.npz: ") as refused:
        load_local_data(tmp_path / "bad.npz", MNIST_SPEC)
    assert why in str(refused.value) and "\n" not in str(refused.value)


def test_files_that_are_not_data_are_refused_in_one_line(tmp_path: Path) -> None:
    np.savez(tmp_path / "no_y.npz", x=np.zeros((2, 28, 28)))
    (tmp_path / "nolabel.csv").write_text("a,b\n1,2\n")
    (tmp_path / "data.txt").write_text("1 2 3\n")
    for name, why in (
        ("no_y.npz", "lacks array(s) ['y']"),
        ("nolabel.csv", "has no 'label' column in ['a', 'b']"),
        ("data.txt", "is neither .npz (x, y) nor .csv"),
        ("missing.npz", "does not exist"),
    ):
        with pytest.raises(DataError, match=r"^local data ") as refused:
            load_local_data(tmp_path / name, MNIST_SPEC)
        assert why in str(refused.value) and "\n" not in str(refused.value)


def test_contribute_with_a_data_file_that_cannot_be_read_exits_2(tmp_path, capsys) -> None:
    path, _ = write_config(tmp_path)
    code = main(["contribute", "--config", str(path), "--data", str(tmp_path / "none.npz")])
    assert code == 2
    assert capsys.readouterr().err == f"error: local data {tmp_path}/none.npz does not exist\n"


# --- architecture descriptions ---------------------------------------------------------------


def _small_model(*extra_layers):
    import keras

    model = keras.Sequential([keras.Input(shape=(4,)), *extra_layers, keras.layers.Dense(2)])
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def test_an_architecture_rebuilds_with_the_same_layout_and_from_logits() -> None:
    from decentralml.io.weights import layout_of
    from decentralml.ml.models import model_tensors

    model = workloads.get("mnist_cnn").build_model(0.001)
    settings = describe(model)
    rebuilt = rebuild(**settings, learning_rate=0.01)
    assert layout_of(model_tensors(rebuilt)) == layout_of(model_tensors(model))
    assert describe(_small_model())["from_logits"] is True


def test_a_lambda_layer_is_refused_before_keras_reads_it() -> None:
    import keras

    settings = describe(_small_model(keras.layers.Lambda(lambda x: x * 2)))
    with pytest.raises(TaskRefused, match=r"^task model architecture refused: a Lambda layer"):
        rebuild(**settings, learning_rate=0.001)


def test_custom_objects_and_a_renamed_architecture_are_refused() -> None:
    import keras

    settings = describe(_small_model(keras.layers.Dense(3)))
    tree = json.loads(settings["architecture"])
    tree["config"]["layers"][1]["module"] = "evil.layers"
    evil = json.dumps(tree)
    with pytest.raises(TaskRefused, match="does not match its architecture's digest"):
        rebuild(**{**settings, "architecture": evil}, learning_rate=0.001)
    from decentralml.ml.workloads.architecture import architecture_name

    renamed = {**settings, "architecture": evil, "model": architecture_name(evil)}
    with pytest.raises(TaskRefused, match=r"unknown custom object 'Dense' from module 'evil\.l"):
        rebuild(**renamed, learning_rate=0.001)
    tree["config"]["layers"][1].update(module="keras.layers", class_name="NoSuchLayer")
    unknown = json.dumps(tree)
    with pytest.raises(TaskRefused, match="cannot be rebuilt safely"):
        rebuild(architecture_name(unknown), unknown, False, 0.1)


# --- training --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mnist_mlp", "mnist_cnn", "breast_cancer"])
def test_each_built_in_model_builds_and_one_step_lowers_its_loss(name: str) -> None:
    import keras

    keras.utils.set_random_seed(0)
    workload = workloads.get(name)
    spec = workload.dataset.spec
    model = workload.build_model(0.001)
    x = np.random.default_rng(0).uniform(size=(16, *spec.input_shape)).astype(np.float32)
    y = np.arange(16) % len(spec.labels)
    before = float(model.evaluate(x, y, verbose=0)[0])
    model.train_on_batch(x, y)
    assert float(model.evaluate(x, y, verbose=0)[0]) < before


@pytest.mark.slow
def test_the_breast_cancer_demo_runs_end_to_end(tmp_path, prefect_harness) -> None:
    from decentralml_cli import _workload_overrides
    from flows.demo import run_demo

    overrides = {
        **{k: v for k, v in _workload_overrides("breast_cancer").items()},
        "workload": "breast_cancer",
        "contributors": 2,
        "task.max_assignments": 2,
        "training.epochs": 5,
        "training.learning_rate": 0.005,
        "simulation.runner": "threads",
    }
    summary = run_demo(parse_config(small_config(tmp_path, **overrides)))
    (row,) = summary["rounds"]
    assert len(row["accepted"]) == 2 and not row["rejected"]
    assert summary["final_accuracy"] > 0.85  # 114 held-back tumours; untrained: about 0.4-0.6


OWN_WORKLOAD = '''
"""A creator's own workload, outside decentralml: two classes split by a hyperplane."""
import keras
import numpy as np

from decentralml.ml.workloads.base import Dataset, DataSpec, Workload, standardize_on


def sample(seed, n):
    x = np.random.default_rng(seed).normal(3.0, 2.0, size=(n, 4))
    return x, (x[:, 0] + x[:, 1] > 6.0).astype(np.int64)


def load(cache_dir=None):
    (x, y) = sample(1, 600)
    return (x[:500], y[:500]), (x[500:], y[500:])


def build(learning_rate=0.001):
    model = keras.Sequential(
        [keras.Input(shape=(4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
    )
    return model


DATA = Dataset("half_planes", "4 features", DataSpec((4,), "float64", (0, 1)), load,
               fit_preprocessing=standardize_on)
WORKLOAD = Workload("half_planes_mlp", "MLP 4-8-2", DATA, build)
'''


@pytest.mark.slow
def test_a_creators_own_workload_and_contributors_own_data_files(tmp_path, prefect_harness):
    """The workload lives in a module outside the package; contributors receive its model as
    an architecture description and train on their own .npz files; one with labels outside
    the task's label set is refused before it takes a slot."""
    from decentralml.contributor import Contributor
    from decentralml.creator.session import open_session
    from decentralml.runtime.backends import contributor_keypair
    from flows.contributor import contribute
    from flows.creator import outcome, publish, run_round

    (tmp_path / "creator_code").mkdir()
    (tmp_path / "creator_code" / "my_workload.py").write_text(textwrap.dedent(OWN_WORKLOAD))
    sys.path.insert(0, str(tmp_path / "creator_code"))
    try:
        data = small_config(
            tmp_path,
            **{
                "workload": "my_workload:WORKLOAD",
                "data.source": None,
                "data.holdout_examples": 100,
                "contributors": 2,
                "task.max_assignments": 2,
                "task.max_examples": 1000,  # the creator provides no shards to bound claims
                "task.validation_strategy": "AutoAccept",
                "training.epochs": 10,
                "training.learning_rate": 0.01,
            },
        )
        session = open_session(parse_config(data), run="own-workload")
        before = session.evaluate_tensors(session.global_tensors, session.test)["accuracy"]
        task_id = publish(session, 1)
    finally:
        sys.path.remove(str(tmp_path / "creator_code"))
    market, store = session.creator.market, session.creator.store
    task = market.get_task(task_id)
    assert task.spec.model.startswith("json-")  # a content address, not the creator's module
    settings = json.loads(_task_json(store, task))
    assert "my_workload" not in json.dumps({k: v for k, v in settings.items()})

    module = sys.modules.pop("my_workload")  # contributors cannot import the creator's code
    files = []
    for index in range(3):
        x, y = _own_samples(10 + index)
        if index == 2:
            y[0] = 7  # a label the task does not have
        np.savez(tmp_path / f"mine-{index}.npz", x=x, y=y)
        files.append(str(tmp_path / f"mine-{index}.npz"))
    try:
        keys = [contributor_keypair(session.creator.config.marketplace, i) for i in range(3)]
        with pytest.raises(DataError, match=r"labels \[7\] are not in the task's label set"):
            contribute(Contributor(market, store, keys[2], 2, local_data=files[2]), task)
        assert market.list_task_results(task_id) == []  # refused before taking a slot
        done = [
            contribute(Contributor(market, store, keys[i], i, local_data=files[i]), task)
            for i in range(2)
        ]
    finally:
        sys.modules["my_workload"] = module
        datasets._DATASETS.pop("half_planes", None)  # a later test registers its own
    assert [c.num_examples for c in done] == [300, 300]
    report = outcome(run_round(session, 1, task_id, return_state=True))
    assert sorted(report.accepted) == sorted(c.submission_id for c in done)
    assert report.metric > max(0.9, before)


def _own_samples(seed: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(seed).normal(3.0, 2.0, size=(300, 4))
    return x, (x[:, 0] + x[:, 1] > 6.0).astype(np.int64)


def _task_json(store, task) -> str:
    import tempfile

    from decentralml.io.packaging import unpack_package

    with tempfile.TemporaryDirectory() as folder:
        unpack_package(store.get(task.spec.assets_path), folder)
        return (Path(folder) / "task.json").read_text()
