"""A contributor's own data, as the workloads and the CLI name it: read and checked in
``decentralml.ml.data.local_data``, where the shared slice's checks (``decentralml.ml.data``) can
reach it without importing the workload registry."""

from decentralml.ml.data.local_data import (
    LABEL_COLUMN,
    check_local_data,
    load_local_data,
    read_local_data,
)

__all__ = ["LABEL_COLUMN", "check_local_data", "load_local_data", "read_local_data"]
