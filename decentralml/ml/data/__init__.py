"""Training data: MNIST resolved offline (``mnist``) and split among contributors (``partition``).

``load_shard(index, num_partitions, scheme, seed)`` is what a contributor calls: its own,
deterministic, normalized share of the MNIST training set. The datasets a task names by
``source`` (``datasets``), their types (``base``), the shards and held-out split of a task
(``federated``), its shared slice (``shared_slice``) and a contributor's own data
(``local_data``) live here too, below the workload registry: nothing in this package imports
``decentralml.ml.workloads``.
"""

from decentralml.ml.data.mnist import (
    MnistSplits,
    default_cache_dir,
    load_mnist,
    load_mnist_from_wheel,
    load_shard,
    normalize,
)
from decentralml.ml.data.partition import (
    SCHEMES,
    label_histogram,
    partition_for,
    partition_indices,
)

__all__ = [
    "SCHEMES",
    "MnistSplits",
    "default_cache_dir",
    "label_histogram",
    "load_mnist",
    "load_mnist_from_wheel",
    "load_shard",
    "normalize",
    "partition_for",
    "partition_indices",
]
