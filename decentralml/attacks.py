"""Simulated attackers: what a dishonest contributor sends instead of its honest work.

For demos, tests and benchmarks only (``decentralml demo --attack KIND --attackers K``): the
creator's defences are measured against these (docs/benchmarks.md, docs/security.md).

* ``sign_flip``: the update reversed and scaled, ``g - scale·(w - g)`` (scale 10) — the
  classic model-poisoning attack of Blanchard et al. 2017 / Fang et al. 2020.
* ``scaled``: the update boosted, ``g + scale·(w - g)``: "model replacement" (Bagdasaryan et
  al., "How To Backdoor Federated Learning", AISTATS 2020).
* ``gaussian_noise``: the trained weights plus N(0, ``noise_std``) on every parameter.
* ``label_flip``: honest training on poisoned labels (``9 - y``): a normal-sized, harmful update.
* ``free_rider``: trains nothing; sends a copy of another contributor's result once one is
  readable, or the global weights back if none appears in time.
* ``inflated_examples``: honest weights, but claims ``10**15`` examples to buy influence.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

AttackKind = Literal[
    "sign_flip", "scaled", "gaussian_noise", "label_flip", "free_rider", "inflated_examples"
]
ATTACKS: tuple[str, ...] = get_args(AttackKind)
INFLATED_CLAIM = 10**15


@dataclass(frozen=True)
class Attack:
    """One attacker's behaviour; ``scale`` and ``noise_std`` as described in the module."""

    kind: AttackKind
    scale: float = 10.0
    noise_std: float = 0.1

    @property
    def trains(self) -> bool:
        return self.kind != "free_rider"

    def labels(self, y: np.ndarray) -> np.ndarray:
        """The labels this attacker trains on (flipped for ``label_flip``)."""
        return (9 - y).astype(y.dtype) if self.kind == "label_flip" else y

    def claim(self, num_examples: int) -> int:
        return INFLATED_CLAIM if self.kind == "inflated_examples" else num_examples

    def weights(
        self,
        global_tensors: Mapping[str, np.ndarray],
        trained: Mapping[str, np.ndarray],
        seed: int = 0,
    ) -> dict[str, np.ndarray]:
        """What this attacker sends, given what honest training produced."""
        if self.kind == "sign_flip":
            return _along_update(global_tensors, trained, -self.scale)
        if self.kind == "scaled":
            return _along_update(global_tensors, trained, self.scale)
        if self.kind == "gaussian_noise":
            rng = np.random.default_rng(seed)
            return {
                n: (t + rng.normal(0.0, self.noise_std, t.shape)).astype(t.dtype)
                for n, t in trained.items()
            }
        return dict(trained)


def _along_update(
    global_tensors: Mapping[str, np.ndarray], trained: Mapping[str, np.ndarray], factor: float
) -> dict[str, np.ndarray]:
    return {n: (g + factor * (trained[n] - g)).astype(g.dtype) for n, g in global_tensors.items()}
