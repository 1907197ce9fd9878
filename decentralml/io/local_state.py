"""What a contributor keeps on its own machine between the rounds of a training.

SCAFFOLD (Karimireddy et al. 2020, decentralml/strategies/scaffold.py) gives every contributor
a control variate c_i that lives across rounds and never leaves its machine. It is stored per
(contributor, creator, training lineage) under ``$DECENTRALML_STATE_DIR`` (else
``~/.local/state/decentralml``), one safetensors file each, written atomically: a crash
leaves the previous c_i or the new one, never a torn file. A missing file, or one that no
longer fits the task's model, means c_i = 0, the paper's starting value: losing c_i costs
convergence speed, never correctness of what is submitted.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from decentralml.io.weights import Layout, check_against, decode, encode
from decentralml.protocol.accounts import canonical_address
from decentralml.protocol.errors import IntegrityError

log = logging.getLogger(__name__)

STATE_ENV = "DECENTRALML_STATE_DIR"


def default_state_dir() -> Path:
    """``$DECENTRALML_STATE_DIR`` if set, else ``~/.local/state/decentralml``."""
    configured = os.environ.get(STATE_ENV)
    return Path(configured) if configured else Path.home() / ".local" / "state" / "decentralml"


class ControlVariates:
    """One contributor's c_i for one training, keyed by a digest of who and which."""

    def __init__(self, worker: str, creator: str, lineage: str, root: Path | None = None):
        key = "|".join((canonical_address(worker), canonical_address(creator), lineage))
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        self.path = (root or default_state_dir()) / "scaffold" / f"{digest}.safetensors"

    def load(self, layout: Layout) -> dict[str, np.ndarray]:
        """c_i, or zeros shaped like ``layout`` when none is stored or it does not fit."""
        zeros = {spec.name: np.zeros(spec.shape, np.dtype(spec.dtype)) for spec in layout}
        if not self.path.is_file():
            return zeros
        try:
            stored = decode(self.path.read_bytes())
            check_against(stored, layout)
        except (OSError, IntegrityError) as problem:
            log.warning("control variate %s unusable (%s): starting from zero", self.path, problem)
            return zeros
        return stored

    def save(self, tensors: Mapping[str, np.ndarray]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(encode(dict(tensors)))
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
