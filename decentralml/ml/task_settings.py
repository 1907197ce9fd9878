"""The task's training settings, one typed model on both sides of the package (task.json).

The creator builds a ``TaskSettings`` and writes ``dump()`` into the contributor package; the
contributor reads the file back with ``TaskSettings.parse`` and from then on uses attributes.
Anyone can publish a task, so for a contributor task.json is untrusted input: every field it
trains with is typed (strict: no ``"3"`` for 3, no ``true`` for 1) and bounded, and a bad file
is refused with one line naming each wrong field (TaskRefused, before any slot is paid).

Unknown keys: ignored (and logged) at the top level and in ``data``, refused in ``round``.
Older packages carry keys since dropped and newer creators add descriptive ones (``metric``);
neither changes how the contributor trains, and an older package must stay readable. A
``round`` key is different: it is an instruction from the round's strategy
(``Strategy.configure_round``, e.g. FedProx's mu; the keys are the strategies' own
``Strategy.Round``) that the aggregation counts on, so training while ignoring one would be
silently wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Annotated, Any, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic_core import ErrorDetails

from decentralml.ml.data.base import DataSpec
from decentralml.ml.data.partition import SCHEMES
from decentralml.protocol.errors import DecentralMLError, TaskRefused
from decentralml.strategies import LocalStep, Strategy
from decentralml.strategies import registry as strategy_registry

log = logging.getLogger(__name__)

MAX_EPOCHS = 100
MAX_BATCH_SIZE = 65_536
MAX_PARTITIONS = 10_000
MAX_SHARED_SLICE = 20_000  # the creator's whole held-out split at most (config.DataConfig)
PARTITIONS = SCHEMES  # the partitioner's own list: a new scheme is one change
OPTIMIZERS = ("adam", "sgd")
"""The local optimizers a task may ask for (keras.optimizers by these names)."""


def _one_of(allowed: tuple[str, ...]) -> AfterValidator:
    """Membership in a tuple read at validation time, so a new optimizer or partition added
    to its tuple is accepted without touching this module."""

    def check(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"not one of {list(allowed)}")
        return value

    return AfterValidator(check)


def _spec(value: object) -> DataSpec:
    return value if isinstance(value, DataSpec) else DataSpec.from_settings(value)


# ``description`` is the field's domain: the refusal says "<field> <value> is not <domain>".
SpecField = Annotated[DataSpec, PlainValidator(_spec), PlainSerializer(DataSpec.to_settings)]


class _Settings(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")


class _RoundBase(_Settings):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _one_local_step(self) -> _RoundBase:
        asked = [cls.name for cls in _round_owners() if cls.local_step(self) is not None]
        if len(asked) > 1:
            raise ValueError(f"round settings ask for {' and '.join(asked)} at once: not supported")
        return self


def _round_owners() -> list[type[Strategy]]:
    """The registered strategies with a contributor side, each once (a subclass that keeps
    its parent's ``Round`` owns nothing more)."""
    owners: dict[type, type[Strategy]] = {}
    for cls in strategy_registry.values():
        if cls.Round is not None:
            owners.setdefault(cls.Round, cls)
    return list(owners.values())


def _round_settings_model() -> type[_RoundBase]:
    """task.json's ``round`` object: every registered strategy's ``Round`` fields together,
    each key owned by one strategy, any other key refused."""
    fields: dict[str, Any] = {}
    for cls in _round_owners():
        assert cls.Round is not None
        for key, info in cls.Round.model_fields.items():
            if key in fields:
                raise TypeError(f"round setting {key!r} is claimed by two strategies")
            fields[key] = (info.annotation, info)
    return create_model("RoundSettings", __base__=_RoundBase, **fields)


RoundSettings = _round_settings_model()
"""What the round's strategy asks of the local training beyond the task's settings; the
keys are the strategies' own (``Strategy.Round``, e.g. FedProx's ``proximal_mu``)."""


class SharedSliceSettings(_Settings):
    """The shared IID slice the package carries (decentralml.ml.data.shared_slice): its file,
    a plain name inside the package, and how many examples it must hold."""

    model_config = ConfigDict(extra="forbid")

    file: str = Field(pattern=r"^[A-Za-z0-9_-]+\.npz$", description="a plain .npz file name")
    examples: int = Field(ge=1, le=MAX_SHARED_SLICE, description=f"1..{MAX_SHARED_SLICE} examples")


class DataSettings(_Settings):
    """Which data the contributor trains on: the dataset (``source``) and how its training
    pool is split into contributors' shards, the spec a contributor's own data must meet and
    the preprocessing (data, never code), and the shared slice the package carries, if any.
    A task from before workloads has no source (MNIST), spec or preprocessing (the dataset's
    default)."""

    source: str = "mnist"
    spec: SpecField | None = None
    preprocessing: dict[str, Any] | None = None
    partition: Annotated[str, _one_of(PARTITIONS)] = Field(description=f"one of {list(PARTITIONS)}")
    num_partitions: int = Field(ge=1, le=MAX_PARTITIONS, description=f"1..{MAX_PARTITIONS}")
    classes_per_contributor: int = Field(ge=1, description="a positive int")
    alpha: float = Field(gt=0, description="a positive number")
    seed: int
    holdout_examples: int = Field(ge=0, description="a non-negative int")
    max_examples: int | None = Field(None, ge=1, description="a positive int")
    shared_slice: SharedSliceSettings | None = None


class TaskSettings(_Settings):
    """What a contributor must know to train, as task.json carries it.

    ``model`` is a built-in model's name or, for a creator's own model, the content address
    of ``architecture`` (a Keras description, decentralml.ml.workloads.architecture);
    ``metric`` is the workload's primary metric, for the record."""

    model: str = Field(description="a model name")
    architecture: str | None = None
    from_logits: bool = False
    metric: str = "accuracy"
    epochs: int = Field(ge=1, le=MAX_EPOCHS, description=f"1..{MAX_EPOCHS}")
    batch_size: int = Field(ge=1, le=MAX_BATCH_SIZE, description=f"1..{MAX_BATCH_SIZE}")
    learning_rate: float = Field(gt=0, lt=1, description="in (0, 1)")
    optimizer: Annotated[str, _one_of(OPTIMIZERS)] = Field(
        "adam", description=f"one of {list(OPTIMIZERS)}"
    )
    round: RoundSettings = RoundSettings()  # type: ignore[valid-type]
    data: DataSettings

    def local_steps(self) -> list[LocalStep]:
        """The contributor-side steps this round's strategy asks for (none for most)."""
        found = (cls.local_step(self.round) for cls in _round_owners())
        return [step for step in found if step is not None]

    @classmethod
    def parse(
        cls, raw: Mapping[str, object], error: type[DecentralMLError] = TaskRefused
    ) -> TaskSettings:
        """The settings in ``raw`` (task.json's object), or ``error`` with one line naming
        every wrong field. Unknown top-level and data keys are logged, then ignored."""
        try:
            settings = cls.model_validate(raw)
        except ValidationError as invalid:
            raise error(f"task settings refused: {'; '.join(problems(invalid))}") from None
        ignored = sorted(set(raw) - set(cls.model_fields))
        data = raw.get("data")
        if isinstance(data, Mapping):
            ignored += [f"data.{k}" for k in sorted(set(data) - set(DataSettings.model_fields))]
        if ignored:
            log.info("task settings: ignoring keys this version does not know: %s", ignored)
        return settings

    def dump(self) -> dict[str, object]:
        """task.json's object. Unset optional fields are left out, as packages always wrote
        them: a contributor of an older version then reads the file as before."""
        return self.model_dump(mode="json", exclude_none=True)


def problems(invalid: ValidationError) -> list[str]:
    """One phrase per wrong field, in the contributor's words; unknown round keys together."""
    found: list[str] = []
    unknown: dict[str, list[str]] = {}
    for error in invalid.errors():
        where = ".".join(str(part) for part in error["loc"])
        if error["type"] == "extra_forbidden":
            parent, _, key = where.rpartition(".")
            unknown.setdefault(parent, []).append(key)
        else:
            found.append(_phrase(where, error))
    found += [
        f"{parent} settings {sorted(keys)} are not known to this contributor"
        for parent, keys in unknown.items()
    ]
    return found


def _phrase(where: str, error: ErrorDetails) -> str:
    value = error.get("input")
    if error["type"] == "missing":
        return f"{where} settings are missing" if where == "data" else f"{where} is missing"
    if error["type"] in ("model_type", "model_attributes_type", "dict_type"):
        return f"{where} settings {value!r} are not a mapping"
    domain = _domain(where)
    if domain:
        return f"{where} {value!r} is not {domain}"
    if error["type"] == "value_error":  # a validator's own sentence (the data spec's)
        return str(error.get("ctx", {}).get("error", error["msg"]))
    return f"{where} {value!r}: {error['msg']}"


def _domain(where: str) -> str | None:
    model: type[BaseModel] | None = TaskSettings
    description = None
    for part in where.split("."):
        field = model.model_fields.get(part) if model else None
        if field is None:
            return None
        description = field.description
        model = _model_of(field.annotation)
    return description


def _model_of(annotation: object) -> type[BaseModel] | None:
    """The settings model a field holds, also when it is optional (``Model | None``)."""
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None
