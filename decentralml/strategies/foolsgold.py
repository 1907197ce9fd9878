"""FoolsGold in front of any rule: accounts whose update histories point the same way lose
their say.

Fung, Yoon, Beschastnikh, "The Limitations of Federated Learning in Sybil Settings", RAID 2020
(arXiv:1808.04866), Algorithm 1. Several accounts run by one party push one objective round
after round; each round's noise differs, so one round's updates may look unrelated (further
apart than the 0.25 relative distance at which validation.value treats results as one
training), but their sums over the rounds converge on the same direction. Honest contributors
with their own data keep distinct histories. Per account i, with Δ_i,t = w_i,t - g_t:

1. H_i = Σ_t Δ_i,t, the account's historical update (this round's included);
2. cs_ij = cos(H_i, H_j), cs_ii = 0, and v_i = max_j cs_ij;
3. pardoning: cs_ij *= v_i / v_j where v_j > v_i (an honest account that merely resembles a
   Sybil is not punished for the Sybils' mutual resemblance);
4. α_i = 1 - max_j cs_ij clipped to [0, 1], divided by max_i α_i (the most distinct account
   keeps its whole say), then the logit α_i = κ·(ln[α_i / (1 - α_i)] + 0.5) clipped to
   [0, 1], with α = 1 read as 0.99 and κ = 1 (the paper's confidence); the logit sends
   accounts well below the most distinct one to 0 and those near it to 1.

The paper adds Σ_i α_i·Δ_i to the global weights: α is each client's learning rate. Here α
scales each update before the configured rule, w_i ← g + α_i·(w_i - g), so it works in front of
every rule (an example-weighted mean, a median, a server optimizer) and keeps the rule's own
weighting; an update with α_i = 0 is left out of the round rather than averaged in as a zero
update (in the paper's sum it adds 0; in a mean it would shrink everyone's step). If every
update of a call has α = 0 (a round of nothing but accounts that mirror others), the rule gets
them all as zero updates: the round does not move the model, and never fails for it.
The paper's optional weighting of "indicative features" (output-layer weights) is not used:
the similarity is over all weights.

The similarities are over every account the training has seen (the paper keeps every
client's history), with this round's updates *seen so far in the round*: the held-out gate and
the value pricing (validation.value) call the rule on subsets of a round, after a first call
with every result still in play, and a subset must weigh each result as the round does — a
Sybil alone in a subset, judged on that subset's updates only, would look like nobody's twin
and get its whole say back, and with it a Shapley value. So α is a property of the account in
the round, not of the subset.

Accounts: a contribution's ``account`` (the contributor's address). A contribution without
one (tests, benchmarks) is a fresh account with no history, never remembered.

State (``state``/``load_state``): each account's H_i as one flat float32 vector of the model's
size, under ``foolsgold/<account>`` (safetensors keys are any strings; the tensors are
flattened in sorted name order), beside the rule's own state; the creator checkpoints it with
the global weights before anyone is paid. Memory: one model-sized float32 history per account
ever seen (100 accounts of a 1M-parameter model: 400 MB), the round's flat updates (one per
account, as the round holds its results anyway), plus, per call, a float64 stack of
all histories for the cosine matrix (8 bytes × accounts × parameters); cost per call
O(accounts² × parameters), and the value pricing calls it once per subset it evaluates.

Within a round every call starts from the histories the round began with (the Strategy
contract), so the subsets leave no trace: the histories after a round are those of its last
call, the round's real aggregation, which adds each aggregated result's update to its account
(a result refused by the review counts in the round's α but is not added), and those it began
with when nothing was accepted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import ClassVar

import numpy as np

from decentralml.strategies.base import Contribution, Strategy, Tensors, Wrapper, materialize

STATE_PREFIX = "foolsgold/"
"""State keys: ``foolsgold/<account>``, one history each; other keys are the rule's."""

_ANONYMOUS = "\0"
"""Prefix of the keys of contributions without an account (never an address's character)."""

_FULL_SAY = 0.99
"""α = 1 before the logit is read as this (ln(1/0) is infinite): the paper's code does so."""


def foolsgold_weights(histories: np.ndarray, confidence: float = 1.0) -> np.ndarray:
    """α for each row of ``histories`` (accounts × parameters): Algorithm 1, steps 2-4.

    Accounts that cannot be told apart at all (every α before normalisation 0: every history
    has a perfect twin) all keep α = 1: the filter has nothing to say about them."""
    count = len(histories)
    if count < 2:
        return np.ones(count)
    rows = np.asarray(histories, dtype=np.float64)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    unit = rows / np.where(norms > 0, norms, 1.0)
    cs = unit @ unit.T
    np.fill_diagonal(cs, 0.0)
    v = cs.max(axis=1)  # ≥ 0: the diagonal's 0 is among them, as in the paper's code
    pardon = v[:, None] < v[None, :]  # v_j > v_i
    ratio = np.divide(v[:, None], v[None, :], out=np.ones_like(cs), where=pardon)
    cs = np.where(pardon, cs * ratio, cs)
    alpha = np.clip(1.0 - cs.max(axis=1), 0.0, 1.0)
    if alpha.max() <= 0:
        return np.ones(count)
    alpha = alpha / alpha.max()
    alpha[alpha >= 1.0] = _FULL_SAY
    with np.errstate(divide="ignore"):
        alpha = confidence * (np.log(alpha / (1.0 - alpha)) + 0.5)
    return np.clip(alpha, 0.0, 1.0)  # ln(0) = -inf → 0


def flat_update(
    tensors: Mapping[str, np.ndarray], global_tensors: Mapping[str, np.ndarray]
) -> np.ndarray:
    """w - g over all tensors, in sorted name order, as one float32 vector."""
    return np.concatenate(
        [
            np.subtract(tensors[name], global_tensors[name], dtype=np.float64).ravel()
            for name in sorted(global_tensors)
        ]
    ).astype(np.float32)


class FoolsGold(Wrapper):
    """FoolsGold (see the module docstring) in front of ``rule``.

    Parameters:
        rule: the strategy that aggregates the α-scaled contributions (it may itself be a
            backdoor filter: FoolsGold goes outermost, since it needs each contribution's
            account and its raw update).
        confidence: κ, the logit's confidence. Default 1.0 (the paper's).

    ``weights`` holds the α of each contribution of the last call (for reports and tests).
    """

    name: ClassVar[str] = "foolsgold"

    def __init__(self, rule: Strategy, confidence: float = 1.0) -> None:
        if not confidence > 0:
            raise ValueError(f"confidence must be > 0, got {confidence}")
        super().__init__(rule)
        self.confidence = confidence
        self.weights: list[float] = []
        self._after: dict[str, np.ndarray] = {}  # histories after round self._round
        self._start: dict[str, np.ndarray] = {}  # histories before round self._round
        self._round: int | None = None
        self._seen: dict[str, np.ndarray] = {}  # round self._round's updates, by account

    def aggregate(
        self,
        round_number: int,
        global_tensors: Mapping[str, np.ndarray],
        contributions: Iterable[Contribution],
    ) -> Tensors:
        if round_number != self._round:
            self._start, self._round, self._seen = self._after, round_number, {}
        self._after = self._start  # nothing aggregated yet in this call
        materialized = materialize(contributions)
        missing = set(materialized[0].tensors) - set(global_tensors)
        if missing:
            raise ValueError(
                f"foolsgold needs the round's global weights; missing {sorted(missing)}"
            )
        updates: dict[str, np.ndarray] = {}  # this call's, by account (summed if repeated)
        keys = []
        for index, contribution in enumerate(materialized):
            key = contribution.account or f"{_ANONYMOUS}{index}"  # fresh, never stored
            update = flat_update(contribution.tensors, global_tensors)
            updates[key] = update if key not in updates else updates[key] + update
            keys.append(key)
        named = {k: u for k, u in updates.items() if not k.startswith(_ANONYMOUS)}
        self._seen.update(named)
        round_histories = self._histories({**self._seen, **updates})
        alpha = self._alpha(round_histories)
        self.weights = [alpha[key] for key in keys]
        self._after = {**self._start, **{k: round_histories[k] for k in named}}
        scaled = scale_updates(global_tensors, materialized, self.weights)
        del materialized
        return self.rule.aggregate(round_number, global_tensors, scaled)

    def _histories(self, updates: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """H = the history the round began with + this round's update, per account."""
        histories = {}
        for account, update in updates.items():
            earlier = self._start.get(account)
            if earlier is not None and earlier.shape != update.shape:
                raise ValueError(
                    f"account {account!r}'s history has {earlier.size} values, the model "
                    f"{update.size}: the state was written for another model"
                )
            histories[account] = update if earlier is None else earlier + update
        return histories

    def _alpha(self, round_histories: Mapping[str, np.ndarray]) -> dict[str, float]:
        """α of every account the training has seen, with this round's updates seen so far."""
        histories = {**self._start, **round_histories}
        accounts = list(histories)
        alpha = foolsgold_weights(np.stack([histories[a] for a in accounts]), self.confidence)
        return dict(zip(accounts, alpha.tolist(), strict=True))

    def state(self) -> Tensors:
        histories = {STATE_PREFIX + account: h for account, h in self._after.items()}
        return {**super().state(), **histories}

    def load_state(self, state: Mapping[str, np.ndarray], round_number: int) -> None:
        mine = {k: v for k, v in state.items() if k.startswith(STATE_PREFIX)}
        super().load_state({k: v for k, v in state.items() if k not in mine}, round_number)
        self._after = {
            key[len(STATE_PREFIX) :]: np.array(value, dtype=np.float32).reshape(-1)
            for key, value in mine.items()
        }
        self._start, self._round, self._seen = {}, round_number, {}


def scale_updates(
    global_tensors: Mapping[str, np.ndarray],
    contributions: list[Contribution],
    alpha: list[float],
) -> list[Contribution]:
    """Each update times its α: α = 1 passed as it is, α = 0 left out, in between
    g + α·(w - g); all of them as zero updates (the global weights) when every α is 0."""
    if all(a <= 0 for a in alpha):
        return [
            Contribution(
                {n: np.asarray(global_tensors[n]).astype(t.dtype) for n, t in c.tensors.items()},
                c.num_examples,
                c.account,
            )
            for c in contributions
        ]
    scaled = []
    for contribution, a in zip(contributions, alpha, strict=True):
        if a >= 1:
            scaled.append(contribution)
        elif a > 0:
            tensors = {}
            for name, tensor in contribution.tensors.items():
                g = np.asarray(global_tensors[name], dtype=np.float64)
                tensors[name] = (g + a * (tensor.astype(np.float64) - g)).astype(tensor.dtype)
            scaled.append(Contribution(tensors, contribution.num_examples, contribution.account))
    return scaled
