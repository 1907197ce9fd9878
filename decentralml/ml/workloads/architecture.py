"""A creator's own model travels as a Keras architecture description (``model.to_json()``):
contributors rebuild it from that text without running any of the creator's code.

Keras can hide code in an architecture: a ``Lambda`` layer carries a function (bytecode) and a
custom class names a module to import. Both are refused before Keras reads the text, and Keras
itself then runs in safe mode with no custom objects, so anything else it does not know is
refused too. The rebuilt model is compiled the way every workload here is (sparse labels,
Adam), from numbers in the task settings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from decentralml.protocol.errors import TaskRefused

if TYPE_CHECKING:
    import keras

PREFIX = "json-"
_CODE_LAYERS = {"Lambda", "TFOpLambda", "SlicingOpLambda"}


def architecture_name(architecture: str) -> str:
    """A content address: two tasks with the same name have the same architecture, so a
    process training several tasks can cache one builder per name."""
    return PREFIX + hashlib.sha256(architecture.encode()).hexdigest()[:16]


def describe(model: keras.Model) -> dict[str, object]:
    """The task settings that let a contributor rebuild ``model`` (creator side)."""
    architecture = model.to_json()
    return {
        "model": architecture_name(architecture),
        "architecture": architecture,
        "from_logits": bool(getattr(model.loss, "from_logits", False)),
    }


def rebuild(
    model: str, architecture: str | None, from_logits: bool, learning_rate: float
) -> keras.Model:
    """The compiled model an architecture description (the task settings' ``model``,
    ``architecture``, ``from_logits``) names; TaskRefused (one line) for a description that is
    not JSON, names the wrong content, or holds code or custom objects."""
    if not isinstance(architecture, str):
        raise TaskRefused("task model architecture is not a JSON string")
    if model != architecture_name(architecture):
        raise TaskRefused("task model name does not match its architecture's digest")
    try:
        tree = json.loads(architecture)
    except json.JSONDecodeError as error:
        raise TaskRefused(f"task model architecture is not JSON: {error}") from None
    for node in _configs(tree):
        refusal = _refusal(node)
        if refusal:
            raise TaskRefused(f"task model architecture refused: {refusal}")
    return _compiled(architecture, from_logits, learning_rate)


def _configs(node: object) -> Iterator[Mapping[str, object]]:
    if isinstance(node, Mapping):
        yield node
        for value in node.values():
            yield from _configs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _configs(item)


def _refusal(node: Mapping[str, object]) -> str | None:
    name = node.get("class_name")
    if name in _CODE_LAYERS:
        return f"a {name} layer carries code (contributors run none of the creator's code)"
    module = node.get("module")
    if isinstance(name, str) and isinstance(module, str) and not module.startswith("keras"):
        return f"unknown custom object {name!r} from module {module!r} (only Keras' own layers)"
    registered = node.get("registered_name")
    if isinstance(registered, str) and ">" in registered:
        return f"unknown custom object {registered!r} (only Keras' own layers)"
    return None


def _compiled(architecture: str, from_logits: bool, learning_rate: float) -> keras.Model:
    import keras

    try:
        with keras.saving.custom_object_scope({}):
            model = keras.models.model_from_json(architecture)
    except Exception as error:  # Keras' own refusal of what it does not know: one line
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise TaskRefused(f"task model architecture cannot be rebuilt safely: {first}") from None
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
    )
    return model
