"""The seed's workload: its MLP on MNIST (the default; nothing changes for existing configs)."""

from __future__ import annotations

from decentralml.data.mnist import load_mnist
from decentralml.models import mnist_mlp as build
from decentralml.workloads.base import Dataset, DataSpec, Workload

MNIST = Dataset(
    name="mnist",
    description="MNIST digits, 60 000 train / 10 000 test (offline, decentralml/data/mnist.py)",
    spec=DataSpec(input_shape=(28, 28), dtype="uint8", labels=tuple(range(10))),
    load=load_mnist,
    preprocessing={"kind": "rescale", "divisor": 255.0},  # the seed's x / 255.0
)

WORKLOAD = Workload(
    name="mnist_mlp",
    model="Flatten · Dense(128, relu) · Dense(10) logits, Adam",
    dataset=MNIST,
    build_model=build,
)
