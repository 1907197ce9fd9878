"""What each result is worth to the round: its Shapley value, measured by the creator.

The round's *utility* of a set S of results is how much the round's aggregate of S (the
configured rule's: FedAvg's weighted mean, a median, FedAdam's step...) lowers the held-out
loss below the round's starting weights: ``v(S) = loss(start) - loss(aggregate(S))``, with
``v(∅) = 0``. Sub-aggregates are rebuilt from the submitted updates, never by retraining
(Song et al. 2019, "Profit allocation for federated learning"; Wang et al. 2020).

The loss is the evaluation's ``capped_loss``: each held-out example's cross-entropy capped
at a uniform guess's, ln(classes). GTG-Shapley's utility is the model's performance on a
validation set (Liu et al. 2022); plain cross-entropy is unbounded, and on non-IID shards
(each contributor two classes) a few results' sub-aggregate predicts only their classes,
confidently: held-out loss 13-28 against 2.4 at the start, so marginals were ±10 and more
where the whole round moved the loss by 0.02, and even the exact values (all 1024 subsets)
ranked an honest one-class contributor below both label flippers. Capped, a confident
mistake costs what a guess does; near convergence, where few examples lose more than
ln(classes), little changes. On that shards round the exact values put both flippers below
0 (-0.023, -0.057) and every two-class contributor above (+0.003 to +0.148); accuracy orders
them alike (-0.009, -0.024) but moves in steps of one held-out example (docs/benchmarks.md,
"Since the matrix"). Per-class values (the hint of issue 16) did not help there: a flipper
trained on 6 and 9 relabelled 3 and 0 helps classes 0 and 3 as an honest holder of them
would, and every two-class result harms the classes it does not hold.

A result's Shapley value is its marginal contribution ``v(S ∪ {i}) - v(S)`` averaged over
every order in which the results could arrive (Shapley 1953). Computing it exactly costs
``2^n`` evaluations (``exact_shapley``: 64 for 6 results); ``gtg_shapley`` estimates it with
GTG-Shapley (Liu, Chen, Zhang, Zhang, Yang, "GTG-Shapley: Efficient and Accurate Participant
Contribution Evaluation in Federated Learning", ACM TIST 2022):

- permutations are sampled with each result taking the first place in turn (guided sampling),
  in whole cycles: a cycle the budget cuts short is dropped, since the first place carries most
  of a result's marginal and every result must have led as often as every other;
- *within-round truncation*: once a prefix's utility is within ``truncation`` (relative) of
  the whole round's, the remaining marginals in that permutation are taken as 0;
- *between-round truncation*: a round whose whole aggregate moves the utility by less than
  ``truncation`` of the start's loss gives everyone 0;
- utilities are cached by subset, so a subset is evaluated once, and the number of
  evaluations is bounded by ``budget``; only complete permutations count.

Everything is seeded: anyone holding the same held-out split, results and seed gets the same
values. ``leave_one_out`` is the cheap variant (n + 1 evaluations): ``v(N) - v(N \\ {i})``.
Duplicates share value: two identical results are symmetric players, so each gets half of
what one of them alone would (the Shapley symmetry axiom), which is why several accounts
submitting one training earn, together, what one would.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from decentralml.protocol import rules
from decentralml.protocol.records import Reputation, Verdict
from decentralml.validation.base import Candidate, RoundView

Subset = frozenset[int]
Utility = Callable[[Subset], float]


class BudgetSpent(Exception):
    """The round's evaluation budget is used up (internal: ends the sampling)."""


@dataclass
class RoundUtility:
    """``v(S)`` for subsets of the round's candidates (by submission id), cached; counts its
    evaluations and refuses to start one past ``budget`` (None: unbounded)."""

    candidates: Sequence[Candidate]
    view: RoundView
    budget: int | None = None
    evaluations: int = 0
    _cache: dict[Subset, float] = field(default_factory=dict)
    _start_loss: float | None = None

    def __post_init__(self) -> None:
        self._by_id = {c.submission_id: c for c in self.candidates}

    @property
    def start_loss(self) -> float:
        if self._start_loss is None:
            self._start_loss = self._loss(self.view.global_tensors)
        return self._start_loss

    def __call__(self, members: Subset) -> float:
        if not members:
            return 0.0
        if members not in self._cache:
            if self.budget is not None and self.evaluations >= self.budget:
                raise BudgetSpent
            self._cache[members] = self.start_loss - self._loss(self._aggregate(members))
        return self._cache[members]

    def _aggregate(self, members: Subset) -> Mapping[str, np.ndarray]:
        chosen = [self._by_id[sid] for sid in sorted(members)]
        if self.view.aggregate is not None:
            return self.view.aggregate(chosen)
        weights = np.array([max(c.weight, 1) for c in chosen], dtype=np.float64)
        total = np.zeros_like(self.view.update(chosen[0]), dtype=np.float64)
        for weight, candidate in zip(weights, chosen, strict=True):
            total += weight * self.view.update(candidate)
        return self.view.weights_from_update((total / weights.sum()).astype(np.float32))

    def _loss(self, tensors: Mapping[str, np.ndarray]) -> float:
        self.evaluations += 1
        metrics = self.view.evaluate(tensors)
        return float(metrics.get("capped_loss", metrics["loss"]))


@dataclass(frozen=True)
class Valuation:
    """Each result's value (held-out loss reduction it brings, in loss units), how it was
    estimated, and what it cost."""

    values: dict[int, float]
    method: str
    evaluations: int
    permutations: int = 0
    errors: dict[int, float] = field(default_factory=dict)
    """Each value's standard error over the sampled permutations (GTG-Shapley with two or
    more permutations); empty for the exact values and leave-one-out, which sample nothing."""


def exact_shapley(players: Sequence[int], utility: Utility) -> Valuation:
    """Every subset evaluated: the reference the estimates are checked against."""
    n = len(players)
    values = dict.fromkeys(players, 0.0)
    for i in players:
        others = [p for p in players if p != i]
        for size in range(n):
            weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for subset in combinations(others, size):
                base = frozenset(subset)
                values[i] += weight * (utility(base | {i}) - utility(base))
    return Valuation(values, "exact", _evaluations(utility))


def leave_one_out(players: Sequence[int], utility: Utility) -> Valuation:
    everyone = frozenset(players)
    values = {i: utility(everyone) - utility(everyone - {i}) for i in players}
    return Valuation(values, "leave_one_out", _evaluations(utility))


def gtg_shapley(
    players: Sequence[int],
    utility: Utility,
    *,
    seed: int,
    truncation: float = 0.01,
    scale: float = 1.0,
    max_permutations: int = 50,
    tolerance: float = 0.02,
) -> Valuation:
    """GTG-Shapley (see the module docstring). ``scale``: the size of a utility that counts
    (the start's loss), so the truncations are relative to it. Sampling stops after
    ``max_permutations``, when the values moved by less than ``tolerance`` (relative, mean
    over the last n permutations), or when the utility's budget is spent; an estimate made
    of no complete cycle (each result leading once) falls back to leave-one-out."""
    order = list(players)
    n = len(order)
    if n == 0:
        return Valuation({}, "gtg_shapley", _evaluations(utility))
    everyone = frozenset(order)
    try:
        whole = utility(everyone)
    except BudgetSpent:
        return Valuation(dict.fromkeys(order, 0.0), "gtg_shapley", _evaluations(utility))
    if abs(whole) < truncation * scale:  # between-round truncation: nothing moved
        return Valuation(dict.fromkeys(order, 0.0), "gtg_shapley", _evaluations(utility))
    rng = np.random.default_rng(seed)
    totals = dict.fromkeys(order, 0.0)
    cycle = dict.fromkeys(order, 0.0)
    samples: dict[int, list[float]] = {p: [] for p in order}  # marginals, whole cycles only
    cycle_samples: dict[int, list[float]] = {p: [] for p in order}
    history: list[dict[int, float]] = []
    cycles, led = 0, 0
    most = max(1, max_permutations // n)
    while cycles < most:
        first = order[led]  # guided: each result leads once per cycle
        rest = [p for p in order if p != first]
        permutation = [first, *(rest[k] for k in rng.permutation(len(rest)))]
        try:
            marginals = _walk(permutation, utility, whole, truncation * scale)
        except BudgetSpent:
            break  # an unfinished cycle is dropped: some results would not have led
        for player, marginal in marginals.items():
            cycle[player] += marginal
            cycle_samples[player].append(marginal)
        led += 1
        if led < n:
            continue
        cycles, led = cycles + 1, 0
        for player in order:
            totals[player] += cycle[player]
            samples[player] += cycle_samples[player]
        cycle = dict.fromkeys(order, 0.0)
        cycle_samples = {p: [] for p in order}
        history.append({p: totals[p] / (cycles * n) for p in order})
        if cycles >= 2 and _settled(history[-2], history[-1], tolerance):
            break
    if cycles == 0:
        try:
            return leave_one_out(order, utility)
        except BudgetSpent:
            return Valuation(dict.fromkeys(order, 0.0), "gtg_shapley", _evaluations(utility))
    done = cycles * n
    values = {p: totals[p] / done for p in order}
    errors = {p: _standard_error(samples[p]) for p in order} if done >= 2 else {}
    return Valuation(values, "gtg_shapley", _evaluations(utility), done, errors)


def _standard_error(marginals: Sequence[float]) -> float:
    """The standard error of a mean of sampled marginals (0 for fewer than two)."""
    if len(marginals) < 2:
        return 0.0
    return float(np.std(marginals, ddof=1) / math.sqrt(len(marginals)))


def _walk(
    permutation: Sequence[int], utility: Utility, whole: float, threshold: float
) -> dict[int, float]:
    """Marginal contributions along one permutation, truncated once the prefix is within
    ``threshold`` of the whole round's utility."""
    marginals: dict[int, float] = {}
    prefix: Subset = frozenset()
    previous = 0.0
    for player in permutation:
        prefix = prefix | {player}
        if abs(whole - previous) < threshold:
            marginals[player] = 0.0
            continue
        current = utility(prefix)
        marginals[player] = current - previous
        previous = current
    return marginals


def _settled(before: Mapping[int, float], after: Mapping[int, float], tolerance: float) -> bool:
    scale = max(sum(abs(v) for v in after.values()), 1e-12)
    moved = sum(abs(after[p] - before[p]) for p in after)
    return moved / scale < tolerance


def _evaluations(utility: Utility) -> int:
    return int(getattr(utility, "evaluations", 0))


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties): how the estimate orders the
    results against the exact values."""
    ranks_a, ranks_b = _ranks(a), _ranks(b)
    if np.std(ranks_a) == 0 or np.std(ranks_b) == 0:
        return 1.0 if np.allclose(ranks_a, ranks_b) else 0.0
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])


def _ranks(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    order = array.argsort(kind="stable")
    ranks = np.empty(len(array), dtype=np.float64)
    ranks[order] = np.arange(len(array), dtype=np.float64)
    for value in np.unique(array):  # ties share their mean rank
        tied = array == value
        ranks[tied] = ranks[tied].mean()
    return ranks


AUTO_BUDGET_PER_RESULT = 30
"""Held-out evaluations per result (training) valued when no budget is configured, and at
least one per result and result (one whole cycle of untruncated walks costs n(n-1)+1): 8
finished no cycle of 10 results on two-class shards, and every value was 0. Measured on the
rounds of tests/test_value_payments.py (every subset's capped loss tabulated once, then
GTG-Shapley sampled with 20 seeds; ValuePricing's truncation 0.005): on shards, 20 per
result paid a flipper more than 10 % of the honest mean in 2 of 20 seeds, 30 in none; on
IID a free rider (exact value below 0) in none; no honest result refused in either. The
sampling usually settles before the budget: about 230 evaluations for 10 results."""


def auto_budget(players: int) -> int:
    """The evaluations a valuation of ``players`` may use when none is configured: never so
    few that no whole cycle of guided permutations fits."""
    return max(AUTO_BUDGET_PER_RESULT, players) * players + 1


@dataclass
class _Measured:
    """One valuation's outcome per result: value, its standard error, amount (those not
    refused), and how many results share its training."""

    how: str
    values: dict[int, float] = field(default_factory=dict)
    errors: dict[int, float] = field(default_factory=dict)
    amounts: dict[int, int] = field(default_factory=dict)
    group_size: dict[int, int] = field(default_factory=dict)
    capped: dict[int, int] = field(default_factory=dict)
    """The results paid less than their value earned, being a newcomer's: its score."""


@dataclass(frozen=True)
class ValuePricing:
    """Pay by value (a task whose ``payment_rule`` is ``value``): after the policy, the
    accepted results are valued with GTG-Shapley on the held-out split. A result whose value
    demonstrably harms the round (``harmful``: below 0 by more than an average result's share
    of the round's worth and one standard error, or by more than ``significance`` standard
    errors over the sampled permutations) is rejected with its value as the reason.
    The others share the round's pool — the fixed share ``reward_per_result`` times their
    number, so the creator pays no more than under ``per_result`` — in proportion to their
    value above 0, each first getting ``floor_share`` of a fixed share (at least 1 unit): a
    result whose value is within the estimate's noise of 0 is paid about nothing, but it is
    not refused, and its worker's reputation does not suffer for the estimator's noise. Near
    convergence every honest result's value is small and the estimate's noise as large
    (docs/benchmarks.md: a plain ``value <= 0`` rule refused 2 of 50 honest IID results in 5
    rounds). Several accounts sending one training share its value (Shapley symmetry), so
    together they earn about what one would. A newcomer's training (no standing on the
    marketplace, ``rules.newcomer``) is paid at most ``newcomer_share_cap`` fixed shares.

    ``budget``: the most held-out evaluations the valuation may use (each is one evaluation
    of the rule's aggregate of a subset); ``seed``: the sampling seed, recorded by the caller
    (the task id) so anyone with the held-out split can recompute the values."""

    reward_per_result: int
    floor_share: float = 0.0
    budget: int | None = None
    """None: ``AUTO_BUDGET_PER_RESULT`` evaluations per result valued (at least n per result),
    enough for about two cycles of guided permutations (each result leading twice)."""
    seed: int = 0
    same_training: float = 0.25
    """Updates closer than this (relative L2 distance) come from one training: honest
    independent updates differ by ~0.5-1.2, noisy copies of one by the noise they carry."""
    truncation: float = 0.005
    """GTG-Shapley's truncations, relative to the start's loss. At ``gtg_shapley``'s 0.01 a
    walk stopped once the prefix came within 0.022 of the whole round's capped loss, and a
    result whose harm lies mostly in that tail (an IID free rider, exact value -0.043) was
    paid 0.07-0.12 of the honest mean; at 0.005, about 0.001."""
    significance: float = 2.0
    """How many standard errors below 0 a value must lie to be refused (about 2.5 % of
    values that are really 0 would be, by chance, at 2)."""
    newcomer_share_cap: float | None = None
    """The most one training of newcomers (accounts below ``rules.ESTABLISHED_REPUTATION``)
    earns, in fixed shares (None: no cap). What the cap keeps back stays with the creator
    (the close refunds it): given to the others, a newcomer account would pay its owner's
    established one. A training sent by k accounts shares one cap, so splitting it across
    fresh accounts never raises what it can earn."""
    standing: Mapping[str, Reputation] = field(default_factory=dict)
    """Each worker's reputation as the marketplace reports it (``ReportsReputation``), by
    the account its submissions name; a worker missing is a fresh account."""

    def price(
        self, candidates: Sequence[Candidate], verdicts: Sequence[Verdict], view: RoundView
    ) -> list[Verdict]:
        """The policy's ``verdicts`` (one per candidate, same order) with amounts and values.

        Results from one training (``groups``: several accounts, one update plus noise) are
        one player: the group's value is split among its members, it earns one pool share,
        and each member counts 1/k of its weight in the aggregate (FoolsGold's point, Fung
        et al. 2020: similar updates get less say). Independent IID updates are substitutes
        too, so the Shapley value alone would pay k accounts of one training k times."""
        accepted = [c for c, v in zip(candidates, verdicts, strict=True) if v.accept]
        if not accepted:
            return list(verdicts)
        measured = self._measure(accepted, view)
        return [self._priced(verdict, measured) for verdict in verdicts]

    def estimate(self, candidates: Sequence[Candidate], view: RoundView) -> dict[int, float]:
        """Each candidate's value among all of ``candidates``, changing nothing: what a
        reviewer sees before deciding (ManualAccept). What is paid is measured again by
        ``price`` among the results the reviewer accepts."""
        if not candidates:
            return {}
        weights = [c.weight for c in candidates]
        try:
            return self._measure(candidates, view).values
        finally:
            for candidate, weight in zip(candidates, weights, strict=True):
                candidate.weight = weight

    def _measure(self, candidates: Sequence[Candidate], view: RoundView) -> _Measured:
        """Group the results by training (each member's weight becomes 1/k of its own),
        value the trainings with GTG-Shapley, and split each training's value and amount
        among its members."""
        groups = same_training_groups(candidates, view, self.same_training)
        for group in groups:
            for candidate in group:
                candidate.weight = max(1, candidate.weight // len(group))
        leaders = {group[0].submission_id: group for group in groups}
        budget = self.budget or auto_budget(len(leaders))
        utility = GroupUtility(RoundUtility(candidates, view, budget=budget), leaders)
        players = sorted(leaders)
        valuation = gtg_shapley(
            players, utility, seed=self.seed, truncation=self.truncation, scale=utility.start_loss
        )
        refused = self.harmful(valuation)
        group_amounts = self.amounts(
            {p: v for p, v in valuation.values.items() if p not in refused}
        )
        worth = sum(valuation.values.values())
        measured = _Measured(
            how=(
                f"GTG-Shapley over {len(players)} trainings worth {worth:+.4f} together, "
                f"{valuation.evaluations} evaluations"
            )
        )
        for leader, group in leaders.items():
            for candidate in group:
                sid = candidate.submission_id
                measured.values[sid] = valuation.values[leader] / len(group)
                measured.errors[sid] = valuation.errors.get(leader, 0.0) / len(group)
                measured.group_size[sid] = len(group)
                if leader in group_amounts:
                    amount = max(1, group_amounts[leader] // len(group))
                    measured.amounts[sid] = self._capped(candidate, amount, len(group), measured)
        return measured

    def _capped(self, candidate: Candidate, amount: int, group: int, measured: _Measured) -> int:
        """``amount``, or a newcomer's cap if lower (its training's ``group`` accounts share
        one); a capped result is noted in ``measured`` with its worker's score."""
        standing = self.standing.get(candidate.submission.worker)
        if self.newcomer_share_cap is None or not rules.newcomer(standing):
            return amount
        cap = max(1, int(self.newcomer_share_cap * self.reward_per_result) // group)
        if amount <= cap:
            return amount
        measured.capped[candidate.submission_id] = (standing or Reputation()).score
        return cap

    def _priced(self, verdict: Verdict, measured: _Measured) -> Verdict:
        value = measured.values.get(verdict.submission_id)
        if not verdict.accept or value is None:
            return verdict
        error = measured.errors.get(verdict.submission_id, 0.0)
        if verdict.submission_id not in measured.amounts:
            reason = (
                f"value {value:+.4f} ± {error:.4f}: it takes more from the round's aggregate on "
                f"the held-out split than an average result brings, or is below 0 beyond the "
                f"estimate's noise ({measured.how})"
            )
            return Verdict(verdict.submission_id, False, reason, value=value)
        amount = measured.amounts[verdict.submission_id]
        others = measured.group_size[verdict.submission_id] - 1
        shared = f", shared with {others} other result(s) of the same training" if others else ""
        score = measured.capped.get(verdict.submission_id)
        capped = (
            ""
            if score is None
            else f" (capped: newcomer, reputation {score} < {rules.ESTABLISHED_REPUTATION})"
        )
        reason = (
            f"{verdict.reason}; value {value:+.4f} ± {error:.4f} ({measured.how}{shared}): "
            f"paid {amount}{capped}"
        )
        return Verdict(verdict.submission_id, True, reason, amount, value)

    def harmful(self, valuation: Valuation) -> set[int]:
        """The players whose value demonstrably harms the round: below 0 by more than an
        average player's share of the round's worth (it takes away more than a result brings
        on average) and by more than one standard error, or by more than ``significance``
        standard errors. The share alone refused honest results: on a round worth little,
        an honest value a hair below ``-share`` is the estimate's noise, not harm."""
        worth = sum(valuation.values.values())
        share = worth / len(valuation.values) if worth > 0 else math.inf
        return {
            p
            for p, value in valuation.values.items()
            if value < -valuation.errors.get(p, 0.0)
            and (value < -share or value < -self.significance * valuation.errors.get(p, 0.0))
        }

    def amounts(self, values: Mapping[int, float]) -> dict[int, int]:
        """The amounts of the results ``values`` names (those not refused): the pool of one
        fixed share each, the floor first, the rest in proportion to the value above 0
        (rounded down, at least 1 each)."""
        if not values:
            return {}
        pool = self.reward_per_result * len(values)
        floor = int(self.floor_share * self.reward_per_result)
        positive = {sid: max(v, 0.0) for sid, v in values.items()}
        rest, total = pool - floor * len(values), sum(positive.values())
        amounts = {
            sid: max(1, floor + (int(rest * v / total) if total > 0 else 0))
            for sid, v in positive.items()
        }
        while sum(amounts.values()) > pool:  # the minimum of 1 cannot take the pool over
            largest = max(amounts, key=amounts.__getitem__)
            amounts[largest] -= 1
        return amounts


def same_training_groups(
    candidates: Sequence[Candidate], view: RoundView, threshold: float
) -> list[list[Candidate]]:
    """The candidates grouped by training: two whose updates lie within ``threshold``
    (relative L2 distance, to the longer) are one training, and so are their groups (single
    linkage). Each group is in commitment order; groups by their first member."""
    parent = list(range(len(candidates)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    updates = [view.update(c) for c in candidates]
    norms = [float(np.linalg.norm(u)) for u in updates]
    for i in range(len(candidates)):
        for j in range(i + 1, len(candidates)):
            longer = max(norms[i], norms[j])
            if longer > 0 and np.linalg.norm(updates[i] - updates[j]) / longer < threshold:
                parent[root(j)] = root(i)
    groups: dict[int, list[Candidate]] = {}
    for i, candidate in enumerate(candidates):
        groups.setdefault(root(i), []).append(candidate)
    return sorted(groups.values(), key=lambda g: g[0].submission_id)


@dataclass
class GroupUtility:
    """``v`` over groups (named by their first member): a set of groups is the set of all
    their members."""

    inner: RoundUtility
    groups: Mapping[int, Sequence[Candidate]]

    @property
    def evaluations(self) -> int:
        return self.inner.evaluations

    @property
    def start_loss(self) -> float:
        return self.inner.start_loss

    def __call__(self, members: Subset) -> float:
        return self.inner(frozenset(c.submission_id for g in members for c in self.groups[g]))
