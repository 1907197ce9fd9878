"""Composable CustomAccept validators: each looks at the round's remaining candidates at once.

A config lists them (``task.validators``); ``CustomAccept`` runs them in order, each on the
candidates the previous ones kept. Built-ins:

* ``update_norm``: an update much longer than the round's median update (sign-flipped and
  scaled, huge values, loud noise) is refused. Norm bounding as a defence: Sun et al., "Can You
  Really Backdoor Federated Learning?", 2019.
* ``holdout_gate``: judges what a contribution does to the aggregate, not its standalone score.
  A contributor holding two digit classes trains a model that scores only ~20 % on the
  creator's held-out split, yet its update is what the aggregate needs for those classes; so
  the gate compares the held-out loss of the round's aggregate with and without each
  candidate (leave-one-out) and refuses the one whose removal helps most, if the loss drops by
  more than ``tolerance`` (relative), then looks again at the rest (colluders hide each other
  in one pass).
* ``min_accuracy``: the seed's standalone held-out accuracy threshold (kept for IID tasks;
  ``validation.builtin``), wrapped like any function.
* a user function ``package.module:function`` taking one Candidate (``FunctionValidator``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from decentralml.protocol.errors import ConfigError
from decentralml.protocol.records import Verdict
from decentralml.validation import builtin
from decentralml.validation.base import Candidate, RoundView


class ValidatorParams(BaseModel):
    """A validator's entry in ``task.validators``: ``name`` picks it, the other fields are its
    parameters. Each validator declares its own subclass (``name`` a one-value Literal), so the
    config is a union discriminated by name built from ``registry``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str


@dataclass(frozen=True)
class Finding:
    accept: bool
    note: str


class RoundValidator(Protocol):
    name: str

    def check(self, candidates: Sequence[Candidate], view: RoundView) -> dict[int, Finding]:
        """A finding for every candidate, keyed by submission id."""


class UpdateNormParams(ValidatorParams):
    name: Literal["update_norm"] = "update_norm"
    max_ratio: Annotated[float, Field(gt=1)] = 3.0


class UpdateNormBound:
    """Refuse updates longer than ``max_ratio`` × the round's median update norm (default 3)."""

    name = "update_norm"
    Params: ClassVar[type[ValidatorParams]] = UpdateNormParams

    def __init__(self, max_ratio: float = 3.0) -> None:
        self.max_ratio = max_ratio

    @classmethod
    def from_params(cls, params: UpdateNormParams) -> UpdateNormBound:
        return cls(params.max_ratio)

    def check(self, candidates: Sequence[Candidate], view: RoundView) -> dict[int, Finding]:
        norms = {c.submission_id: view.update_norm(c) for c in candidates}
        median = float(np.median(list(norms.values())))
        findings = {}
        for sid, norm in norms.items():
            ratio = norm / median if median > 0 else (1.0 if norm == 0 else float("inf"))
            if ratio > self.max_ratio:
                note = (
                    f"update norm {norm:.3g} is {ratio:.1f}× the round's median {median:.3g} "
                    f"(limit {self.max_ratio:g}×)"
                )
                findings[sid] = Finding(False, note)
            else:
                findings[sid] = Finding(True, f"update norm {ratio:.2f}× median")
        return findings


class HoldoutGateParams(ValidatorParams):
    """A result is refused when leaving it out lowers the aggregate's held-out loss by more
    than ``tolerance`` (relative) and raises no class's loss by more than ``class_tolerance``
    (relative): it harms the whole and helps no class."""

    name: Literal["holdout_gate"] = "holdout_gate"
    tolerance: Annotated[float, Field(ge=0, lt=1)] = 0.08
    class_tolerance: Annotated[float, Field(ge=0)] = 0.05


class HoldoutGate:
    """Leave-one-out on the held-out split: refuse a candidate whose removal lowers the
    held-out loss of the round's aggregate (its configured rule's; the example-weighted mean
    when the view has none) by more than ``tolerance`` (relative,
    default 0.08) AND that helps no class — leaving it out raises no class's loss by more
    than ``class_tolerance`` (relative, default 0.05) — worst first, re-measuring after each
    refusal.

    Loss, not accuracy: it moves smoothly with every example's confidence. Per class, because
    on non-IID data an honest contributor holding two digit classes can make the overall loss
    worse (its update pulls the others towards its classes) while being the only support of
    its own classes: leaving it out raised those classes' loss by 80–250 % in our runs, where
    a label-flipped update helps no class (leaving it out lowered every class's loss, and the
    overall loss by 15–18 %, among ten IID contributors). docs/benchmarks.md has the numbers."""

    name = "holdout_gate"
    metric = "loss"
    Params: ClassVar[type[ValidatorParams]] = HoldoutGateParams

    def __init__(self, tolerance: float = 0.08, class_tolerance: float = 0.05) -> None:
        self.tolerance = tolerance
        self.class_tolerance = class_tolerance

    @classmethod
    def from_params(cls, params: HoldoutGateParams) -> HoldoutGate:
        return cls(params.tolerance, params.class_tolerance)

    def check(self, candidates: Sequence[Candidate], view: RoundView) -> dict[int, Finding]:
        in_play = list(candidates)
        findings: dict[int, Finding] = {}
        while in_play:
            with_all, without = self._leave_one_out(in_play, view)
            drops = {sid: _relative_drop(with_all["loss"], m["loss"]) for sid, m in without.items()}
            helps = {sid: _class_help(with_all, m) for sid, m in without.items()}
            harmful = [
                sid
                for sid in drops
                if drops[sid] > self.tolerance and helps[sid] <= self.class_tolerance
            ]
            if not harmful:
                for sid, drop in drops.items():
                    note = (
                        f"held-out loss of the aggregate {with_all['loss']:.4f} "
                        f"({drop:+.1%} without it; helps a class by {helps[sid]:+.0%})"
                    )
                    findings[sid] = Finding(True, note)
                return findings
            worst = max(harmful, key=lambda sid: drops[sid])
            findings[worst] = Finding(
                False,
                f"held-out loss of the round's aggregate is {with_all['loss']:.4f} with this "
                f"result and {without[worst]['loss']:.4f} without it ({drops[worst]:.1%} lower; "
                f"tolerance {self.tolerance:.0%}), and it helps no class",
            )
            in_play = [c for c in in_play if c.submission_id != worst]
        return findings

    def _leave_one_out(
        self, in_play: Sequence[Candidate], view: RoundView
    ) -> tuple[dict, dict[int, dict]]:
        """Held-out metrics of the round's aggregate with every candidate and without each:
        the configured rule's (``view.aggregate``), or the weighted mean, computed here
        from the updates by subtraction (n + 1 means for the price of one)."""
        if view.aggregate is not None:
            return self._rule_leave_one_out(in_play, view)
        weights = np.array([max(c.weight, 1) for c in in_play], dtype=np.float64)
        updates = [view.update(c) for c in in_play]
        weighted_sum = np.zeros_like(updates[0], dtype=np.float64)
        for weight, update in zip(weights, updates, strict=True):
            weighted_sum += weight * update
        total = float(weights.sum())
        with_all = self._score(view, weighted_sum / total)
        without = {}
        for candidate, weight, update in zip(in_play, weights, updates, strict=True):
            rest = total - weight
            mean = (weighted_sum - weight * update) / rest if rest > 0 else weighted_sum * 0
            without[candidate.submission_id] = self._score(view, mean)
        return with_all, without

    def _rule_leave_one_out(
        self, in_play: Sequence[Candidate], view: RoundView
    ) -> tuple[dict, dict[int, dict]]:
        assert view.aggregate is not None
        with_all = view.evaluate(view.aggregate(in_play))
        without = {}
        for candidate in in_play:
            rest = [c for c in in_play if c.submission_id != candidate.submission_id]
            kept = view.aggregate(rest) if rest else view.global_tensors
            without[candidate.submission_id] = view.evaluate(kept)
        return with_all, without

    def _score(self, view: RoundView, update: np.ndarray) -> dict:
        return view.evaluate(view.weights_from_update(update.astype(np.float32)))


def _class_help(with_all: dict, without: dict) -> float:
    """The largest relative rise of one class's loss when the result is left out: how much
    it helps the class it helps most. 0.0 when the evaluator gives no per-class losses: then
    only the overall loss decides."""
    before, after = with_all.get("class_loss"), without.get("class_loss")
    if not before or not after:
        return 0.0
    rises = [
        (a - b) / b for b, a in zip(before, after, strict=True) if b > 0 and np.isfinite(a - b)
    ]
    return max(rises, default=0.0)


def _relative_drop(with_all: float, without: float) -> float:
    """How much lower the loss is without a result, as a fraction of the loss with it."""
    if with_all <= 0:
        return 0.0 if without >= with_all else float("inf")
    return (with_all - without) / with_all


class FunctionValidator:
    """A creator's own ``module:function``: gets a Candidate, returns a Verdict, a bool or an
    ``(accept, reason)`` pair. It runs in the creator's process: the creator's code, never a
    contributor's."""

    def __init__(self, function: Callable[[Candidate], Any], reference: str = "") -> None:
        self.function = function
        self.name = reference or getattr(function, "__name__", "custom")

    def check(self, candidates: Sequence[Candidate], view: RoundView) -> dict[int, Finding]:
        return {c.submission_id: self.judge(c) for c in candidates}

    def judge(self, candidate: Candidate) -> Finding:
        outcome = self.function(candidate)
        if isinstance(outcome, Verdict):
            return Finding(outcome.accept, outcome.reason)
        if isinstance(outcome, bool | np.bool_):
            return Finding(bool(outcome), f"{self.name} returned {bool(outcome)}")
        if (
            isinstance(outcome, tuple)
            and len(outcome) == 2
            and isinstance(outcome[0], bool | np.bool_)
        ):
            return Finding(bool(outcome[0]), str(outcome[1]))
        raise ConfigError(
            f"custom validator {self.name} returned {outcome!r}; "
            "return a Verdict, a bool or an (accept, reason) pair"
        )


MIN_ACCURACY = "decentralml.validation.builtin:min_accuracy"


class MinAccuracyParams(ValidatorParams):
    """The seed's standalone check; its threshold is ``task.min_accuracy``."""

    name: Literal["min_accuracy"] = "min_accuracy"


class MinAccuracy(FunctionValidator):
    """The seed's standalone held-out threshold (``validation.builtin.min_accuracy``)."""

    Params: ClassVar[type[ValidatorParams]] = MinAccuracyParams

    def __init__(self) -> None:
        super().__init__(builtin.min_accuracy, MIN_ACCURACY)

    @classmethod
    def from_params(cls, params: MinAccuracyParams) -> MinAccuracy:
        return cls()


registry: dict[str, Any] = {
    params_name: cls
    for cls in (UpdateNormBound, HoldoutGate, MinAccuracy)
    for params_name in [cls.Params.model_fields["name"].default]
}
"""Every built-in validator by its config name. Adding one is its class (with ``Params``
and ``from_params``) in this module and its entry here; the config's ``task.validators``
union is built from it."""


def make_validator(params: ValidatorParams) -> RoundValidator:
    """The validator a ``task.validators`` entry names, built from its parameters."""
    return registry[params.name].from_params(params)
