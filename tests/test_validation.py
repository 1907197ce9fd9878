"""decentralml.validation: integrity screening and the three acceptance policies.

Results are real safetensors files of the seed model in memory:// storage, described by the
marketplace's own records (Submission, TaskResult). The built-in min_accuracy validator is run
with a real compiled Keras model on real MNIST (``slow``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator

import fsspec
import numpy as np
import pytest
import yaml

from decentralml.io.storage import ArtifactStore, sha256_hex
from decentralml.io.weights import Layout, encode, layout_of
from decentralml.protocol.errors import ConfigError
from decentralml.protocol.records import (
    ResultSubmissionStatus,
    Submission,
    TaskResult,
    ValidationStrategy,
    Verdict,
)
from decentralml.runtime.config import TaskConfig
from decentralml.validation import (
    AutoAccept,
    Candidate,
    CustomAccept,
    FunctionValidator,
    ManualAccept,
    builtin,
    decisions_from_file,
    function_policy,
    make_policy,
    prompt_decider,
    screen,
)
from decentralml.validation.custom import load_function

BUILTIN = "decentralml.validation.builtin:min_accuracy"
MAX_BYTES = 1_000_000  # the seed model is 407 kB


@pytest.fixture(scope="module")
def seed_model():
    """One compiled seed model (TensorFlow import ~5 s), reused for evaluation."""
    from decentralml.ml.models import build_model

    return build_model("mnist_mlp")


@pytest.fixture(scope="module")
def global_tensors(seed_model) -> dict[str, np.ndarray]:
    from decentralml.ml.models import model_tensors

    return model_tensors(seed_model)


@pytest.fixture(scope="module")
def layout(global_tensors: dict[str, np.ndarray]) -> Layout:
    return layout_of(global_tensors)


@pytest.fixture(scope="module")
def local_update(global_tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A contributor's weights: the global ones moved a little, as after local training."""
    rng = np.random.default_rng(3)
    return {
        n: (t + rng.normal(0, 1e-3, t.shape)).astype(t.dtype) for n, t in global_tensors.items()
    }


class Round:
    """One round's storage: the global weights and the contributors' results, in memory://."""

    def __init__(self, global_tensors: dict[str, np.ndarray]) -> None:
        self.store = ArtifactStore(f"memory://validation-test-{uuid.uuid4().hex}")
        self.global_sha256 = self.store.put(
            self.store.round_url("run", 1, "global.safetensors"), encode(global_tensors)
        ).sha256
        self.fetched: list[str] = []
        self._next_id = 1

    def fetch(self, url: str, sha256: str) -> bytes:
        self.fetched.append(url)
        return self.store.get(url, expected_sha256=sha256)

    def submit(
        self,
        data: bytes | None,
        num_examples: int = 1000,
        base: str | None = None,
        recorded_sha256: str | None = None,
        recorded_path: str | None = None,
    ) -> Submission:
        """Store ``data`` as a result (None: nothing stored) and return its record."""
        sid = self._next_id
        self._next_id += 1
        url = self.location(sid)
        if data is not None:
            self.store.put(url, data)
        result = TaskResult(
            result_path=recorded_path or url,
            sha256=recorded_sha256 or sha256_hex(data or b""),
            num_examples=num_examples,
            metrics={"accuracy": 0.9},
            base_fingerprint=self.global_sha256 if base is None else base,
        )
        return Submission(
            sid, 1, f"worker-{sid}", ResultSubmissionStatus.PendingValidation, 10, result
        )

    def location(self, sid: int) -> str:
        """Where the creator expects submission ``sid``'s result (it derives it itself)."""
        return self.store.round_url("run", 1, f"results/submission-{sid}.safetensors")

    def screen(
        self, submission: Submission, layout: Layout, max_examples: int | None = None
    ) -> dict[str, np.ndarray] | Verdict:
        location = self.location(submission.submission_id)
        return screen(submission, self.fetch, layout, location, MAX_BYTES, max_examples)

    def cleanup(self) -> None:
        fs = fsspec.filesystem("memory")
        if fs.exists(self.store.root_url):
            fs.rm(self.store.root_url, recursive=True)


@pytest.fixture
def round_(global_tensors: dict[str, np.ndarray]) -> Iterator[Round]:
    r = Round(global_tensors)
    yield r
    r.cleanup()


def _rejected(outcome: object, submission: Submission) -> str:
    assert isinstance(outcome, Verdict), f"expected a rejection, got {type(outcome).__name__}"
    assert outcome.submission_id == submission.submission_id
    assert outcome.accept is False
    return outcome.reason


# --- screen --------------------------------------------------------------------------------


def test_a_good_result_passes_with_its_tensors(round_: Round, layout: Layout, local_update) -> None:
    submission = round_.submit(encode(local_update, {"num_examples": 1000}))
    tensors = round_.screen(submission, layout)
    assert isinstance(tensors, dict)
    assert sorted(tensors) == sorted(local_update)
    for name, tensor in local_update.items():
        assert tensors[name].tobytes() == tensor.tobytes()
    assert round_.fetched == [submission.result.result_path]


def test_digest_mismatch_is_rejected(round_: Round, layout: Layout, local_update) -> None:
    data = encode(local_update)
    recorded = sha256_hex(b"what the contributor registered")
    submission = round_.submit(data, recorded_sha256=recorded)
    reason = _rejected(round_.screen(submission, layout), submission)
    assert reason == "stored result does not match its recorded sha256"


def test_file_swapped_after_registration_is_rejected(
    round_: Round, layout: Layout, local_update, global_tensors
) -> None:
    submission = round_.submit(encode(local_update))
    round_.store.put(submission.result.result_path, encode(global_tensors))  # swapped
    reason = _rejected(round_.screen(submission, layout), submission)
    assert reason == "stored result does not match its recorded sha256"


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.999])
def test_truncated_file_is_rejected(
    round_: Round, layout: Layout, local_update, keep: float
) -> None:
    data = encode(local_update)
    cut = data[: int(len(data) * keep)]  # registered as is: the digest matches the cut file
    submission = round_.submit(cut)
    reason = _rejected(round_.screen(submission, layout), submission)
    assert reason.startswith("weights file is truncated"), reason


def test_not_a_weights_file_is_rejected(round_: Round, layout: Layout) -> None:
    submission = round_.submit(b"\x08\x00\x00\x00\x00\x00\x00\x00not json")
    assert _rejected(round_.screen(submission, layout), submission) == (
        "weights file header is not JSON: not a safetensors file"
    )


def test_wrong_shape_is_rejected(round_: Round, layout: Layout, local_update) -> None:
    bad = dict(local_update)
    bad["002.kernel"] = np.zeros((128, 9), dtype=np.float32)
    submission = round_.submit(encode(bad))
    assert _rejected(round_.screen(submission, layout), submission) == (
        "tensor 002.kernel has shape (128, 9), the model needs (128, 10)"
    )


def test_wrong_dtype_is_rejected(round_: Round, layout: Layout, local_update) -> None:
    bad = dict(local_update)
    bad["001.bias"] = bad["001.bias"].astype(np.float64)
    submission = round_.submit(encode(bad))
    assert _rejected(round_.screen(submission, layout), submission) == (
        "tensor 001.bias has dtype float64, the model needs float32"
    )


def test_missing_tensor_is_rejected(round_: Round, layout: Layout, local_update) -> None:
    bad = {n: t for n, t in local_update.items() if n != "003.bias"}
    submission = round_.submit(encode(bad))
    assert _rejected(round_.screen(submission, layout), submission) == (
        "tensor names differ from the model: missing ['003.bias'], extra []"
    )


@pytest.mark.parametrize("value", [np.nan, np.inf], ids=["nan", "inf"])
def test_non_finite_weights_are_rejected(
    round_: Round, layout: Layout, local_update, value: float
) -> None:
    bad = dict(local_update)
    bad["000.kernel"] = bad["000.kernel"].copy()
    bad["000.kernel"][400, 64] = value
    submission = round_.submit(encode(bad))
    assert _rejected(round_.screen(submission, layout), submission) == (
        "tensor 000.kernel contains NaN or infinite values"
    )


def test_a_claimed_base_fingerprint_is_not_trusted_either_way(
    round_: Round, layout: Layout, local_update
) -> None:
    """The field is whatever the contributor writes: the weights are judged, not the claim."""
    submission = round_.submit(encode(local_update), base=sha256_hex(b"last round's weights"))
    assert isinstance(round_.screen(submission, layout), dict)


@pytest.mark.parametrize("num_examples", [0, -1])
def test_non_positive_num_examples_is_rejected_without_download(
    round_: Round, layout: Layout, local_update, num_examples: int
) -> None:
    submission = round_.submit(encode(local_update), num_examples=num_examples)
    assert _rejected(round_.screen(submission, layout), submission) == (
        f"num_examples must be positive, got {num_examples}"
    )
    assert round_.fetched == []


def test_missing_file_is_rejected(round_: Round, layout: Layout) -> None:
    submission = round_.submit(None, recorded_sha256="ab" * 32)
    assert _rejected(round_.screen(submission, layout), submission) == (
        "no result file is stored at the submission's location"
    )


def test_oversized_file_is_rejected(round_: Round, layout: Layout, local_update) -> None:
    data = encode(local_update)
    submission = round_.submit(data)
    location = round_.location(submission.submission_id)
    outcome = screen(submission, round_.fetch, layout, location, len(data) - 1)
    assert _rejected(outcome, submission) == (
        f"weights file is {len(data)} bytes, over the {len(data) - 1}-byte limit"
    )


def test_a_submission_without_result_is_rejected(round_: Round, layout: Layout) -> None:
    submission = Submission(9, 1, "worker-9", ResultSubmissionStatus.Assigned, 10, None)
    assert round_.screen(submission, layout) == Verdict(9, False, "no result was sent")


# --- policies ------------------------------------------------------------------------------


def _candidate(
    sid: int = 7,
    num_examples: int = 1000,
    accuracy: float = 0.9,
    tensors: dict | None = None,
    params: dict | None = None,
) -> tuple[Candidate, list[int]]:
    """A candidate whose evaluator returns ``accuracy``; the list counts evaluator calls."""
    calls: list[int] = []

    def evaluate(t) -> dict:
        calls.append(1)
        return {"accuracy": accuracy, "loss": 0.3, "examples": 500}

    result = TaskResult(f"memory://r/{sid}", "00" * 32, num_examples)
    submission = Submission(sid, 1, "bob", ResultSubmissionStatus.PendingValidation, 10, result)
    return Candidate(submission, tensors or {}, evaluate, params or {}), calls


def test_auto_accept_accepts_what_passed_screening() -> None:
    candidate, calls = _candidate(sid=4)
    assert AutoAccept().decide(candidate) == Verdict(4, True, "passed integrity checks")
    assert calls == []  # no evaluation needed
    assert make_policy(TaskConfig(validation_strategy="AutoAccept")).name == "AutoAccept"


def test_holdout_metrics_are_computed_once() -> None:
    candidate, calls = _candidate()
    assert candidate.holdout_metrics()["accuracy"] == 0.9
    assert candidate.holdout_metrics()["accuracy"] == 0.9
    assert calls == [1]


DECISIONS = {
    "7": {"accept": True, "reason": "looks good"},
    "8": {"accept": False, "reason": "late"},
    "9": {"accept": True},
}


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml"])
def test_manual_accept_from_a_decisions_file(tmp_path, suffix: str) -> None:
    path = tmp_path / f"decisions{suffix}"
    text = (
        json.dumps(DECISIONS)
        if suffix == ".json"
        else yaml.safe_dump(
            {int(k): v for k, v in DECISIONS.items()}  # YAML files naturally use int keys
        )
    )
    path.write_text(text)
    policy = ManualAccept(decisions_from_file(path))
    assert policy.decide(_candidate(7)[0]) == Verdict(7, True, "looks good")
    assert policy.decide(_candidate(8)[0]) == Verdict(8, False, "late")
    assert policy.decide(_candidate(9)[0]) == Verdict(9, True, "decided by the creator")
    with pytest.raises(ConfigError) as error:
        policy.decide(_candidate(10)[0])
    assert str(error.value) == f"{path} has no decision for submission 10; add it and rerun"


def test_make_policy_reads_the_configured_decisions_file(tmp_path) -> None:
    path = tmp_path / "decisions.json"
    path.write_text(json.dumps(DECISIONS))
    task = TaskConfig(
        validation_strategy=ValidationStrategy.ManualAccept, manual_decisions=str(path)
    )
    policy = make_policy(task)
    assert policy.name == "ManualAccept"
    assert policy.decide(_candidate(8)[0]) == Verdict(8, False, "late")


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("missing.json", None, "decisions file {path} does not exist"),
        ("broken.json", "{not json", "decisions file {path} cannot be parsed: "),
        ("broken.yaml", "a: [1", "decisions file {path} cannot be parsed: "),
        ("list.json", "[1, 2]", "decisions file {path} must map submission ids to decisions"),
        (
            "text.json",
            '{"7": {"accept": "yes"}}',
            "{path}: decision for 7 needs a boolean 'accept'",
        ),
        ("flat.json", '{"7": true}', "{path}: decision for 7 needs a boolean 'accept'"),
    ],
)
def test_bad_decisions_file_is_a_config_error(tmp_path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError) as error:
        decisions_from_file(path)
    assert str(error.value).startswith(message.format(path=path))


def test_non_numeric_submission_id_is_a_config_error(tmp_path) -> None:
    path = tmp_path / "decisions.json"
    path.write_text(json.dumps({"seven": {"accept": True}}))
    with pytest.raises(ConfigError, match="seven"):
        decisions_from_file(path)


def test_empty_reason_in_yaml_gets_the_default(tmp_path) -> None:
    path = tmp_path / "decisions.yaml"
    path.write_text("7:\n  accept: true\n  reason:\n")
    assert decisions_from_file(path)(_candidate(7)[0]) == Verdict(7, True, "decided by the creator")


def _scripted(*answers: str) -> tuple[Callable[[str], str], list[str]]:
    prompts: list[str] = []
    replies = iter(answers)

    def ask(prompt: str) -> str:
        prompts.append(prompt)
        return next(replies)

    return ask, prompts


@pytest.mark.parametrize(
    ("answers", "verdict"),
    [
        (("y", "fine weights"), (True, "fine weights")),
        ((" YES ", ""), (True, "accepted by the creator")),
        (("n", "  too noisy "), (False, "too noisy")),
        (("", ""), (False, "rejected by the creator")),
        (("maybe", "unsure"), (False, "unsure")),
    ],
)
def test_prompt_decider_asks_and_records_the_reason(answers, verdict) -> None:
    ask, prompts = _scripted(*answers)
    candidate, calls = _candidate(sid=5, num_examples=1234, accuracy=0.91234)
    assert ManualAccept(prompt_decider(ask)).decide(candidate) == Verdict(5, *verdict)
    assert prompts == [
        "submission 5 by bob: 1234 examples, held-out accuracy 0.9123\naccept? [y/n] ",
        "reason: ",
    ]
    assert calls == [1]


def test_make_policy_uses_a_given_decider() -> None:
    ask, _ = _scripted("y", "ok")
    task = TaskConfig(validation_strategy=ValidationStrategy.ManualAccept)
    assert make_policy(task, prompt_decider(ask)).decide(_candidate(3)[0]) == Verdict(3, True, "ok")


# --- CustomAccept --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("function", "num_examples", "verdict"),
    [
        ("always", 10, (True, "tests.custom_validators:always returned True")),
        ("never", 10, (False, "tests.custom_validators:never returned False")),
        ("enough_examples", 100, (True, "100 examples (needs 100)")),
        ("enough_examples", 99, (False, "99 examples (needs 100)")),
    ],
)
def test_custom_accept_with_bool_and_pair_results(
    function: str, num_examples: int, verdict: tuple[bool, str]
) -> None:
    reference = f"tests.custom_validators:{function}"
    policy = function_policy(reference)
    assert policy.decide(_candidate(6, num_examples)[0]) == Verdict(6, *verdict)


def test_custom_accept_with_a_verdict_looks_at_the_tensors(local_update) -> None:
    reference = "tests.custom_validators:small_bias"
    task = TaskConfig(
        validation_strategy=ValidationStrategy.CustomAccept, custom_validator=reference
    )
    policy = make_policy(task)
    assert policy.name == "CustomAccept"
    good = policy.decide(_candidate(6, tensors=local_update)[0])
    assert good.accept and good.submission_id == 6
    assert good.reason.startswith("bias magnitude 0.00") and good.reason.endswith("within 1.0")
    poisoned = {**local_update, "003.bias": np.full(10, 5.0, dtype=np.float32)}
    assert policy.decide(_candidate(6, tensors=poisoned)[0]) == Verdict(
        6, False, "bias magnitude 5.00 exceeds 1.0"
    )


def test_custom_accept_without_a_reference_names_the_function() -> None:
    def picky(candidate: Candidate) -> bool:
        return False

    policy = CustomAccept(FunctionValidator(picky))
    assert policy.decide(_candidate(2)[0]) == Verdict(2, False, "picky returned False")


@pytest.mark.parametrize("function", ["garbage", "half_pair"])
def test_custom_accept_refuses_other_return_values(function: str) -> None:
    reference = f"tests.custom_validators:{function}"
    policy = function_policy(reference)
    with pytest.raises(ConfigError) as error:
        policy.decide(_candidate()[0])
    assert str(error.value).startswith(f"custom validator {reference} returned ")
    assert str(error.value).endswith("return a Verdict, a bool or an (accept, reason) pair")


def test_custom_accept_takes_a_numpy_bool(local_update) -> None:
    reference = "tests.custom_validators:numpy_bool"
    policy = function_policy(reference)
    assert policy.decide(_candidate(6, tensors=local_update)[0]).accept is True


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("tests.custom_validators.always", "must look like 'package.module:function'"),
        (":always", "must look like 'package.module:function'"),
        ("tests.custom_validators:", "must look like 'package.module:function'"),
        (
            "tests.no_such_module:always",
            "custom validator module 'tests.no_such_module' cannot be imported: "
            "No module named 'tests.no_such_module'",
        ),
        (
            "tests.custom_validators:no_such_function",
            "custom validator 'tests.custom_validators:no_such_function': "
            "tests.custom_validators has no function 'no_such_function'",
        ),
        (
            "tests.custom_validators:NOT_A_FUNCTION",
            "tests.custom_validators has no function 'NOT_A_FUNCTION'",
        ),
    ],
)
def test_load_function_errors(reference: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_function(reference)
    assert message in str(error.value)


def test_load_function_finds_the_builtin() -> None:
    assert load_function(BUILTIN) is builtin.min_accuracy


@pytest.mark.parametrize(
    ("accuracy", "accept", "reason"),
    [
        (0.5, True, "held-out accuracy 0.5000 >= 0.5000"),
        (0.49999, False, "held-out accuracy 0.5000 is below 0.5000"),
        (0.97, True, "held-out accuracy 0.9700 >= 0.5000"),
    ],
)
def test_min_accuracy_threshold_is_inclusive(accuracy: float, accept: bool, reason: str) -> None:
    candidate, _ = _candidate(sid=1, accuracy=accuracy, params={"min_accuracy": 0.5})
    assert builtin.min_accuracy(candidate) == Verdict(1, accept, reason)


def test_min_accuracy_defaults_to_half_without_params() -> None:
    assert builtin.min_accuracy(_candidate(accuracy=0.4)[0]).reason == (
        "held-out accuracy 0.4000 is below 0.5000"
    )


def test_the_min_accuracy_validator_takes_its_threshold_from_the_config() -> None:
    task = TaskConfig(
        validation_strategy=ValidationStrategy.CustomAccept,
        validators=["min_accuracy"],
        min_accuracy=0.8,
    )
    policy = make_policy(task)
    params = {"min_accuracy": task.min_accuracy}
    low, _ = _candidate(sid=3, accuracy=0.75, params=params)
    high, _ = _candidate(sid=4, accuracy=0.85, params=params)
    assert policy.decide(low) == Verdict(3, False, "held-out accuracy 0.7500 is below 0.8000")
    assert policy.decide(high) == Verdict(4, True, "held-out accuracy 0.8500 >= 0.8000")


# --- min_accuracy on real MNIST (slow) -----------------------------------------------------

HOLDOUT = 2000


@pytest.fixture(scope="module")
def mnist():
    from decentralml.ml.data import load_mnist, normalize

    (x_train, y_train), (x_test, y_test) = load_mnist()
    return (
        (normalize(x_train[:5000]), y_train[:5000]),
        (normalize(x_test[:HOLDOUT]), y_test[:HOLDOUT]),
    )


@pytest.fixture(scope="module")
def trained_tensors(mnist, global_tensors) -> dict[str, np.ndarray]:
    """The seed model trained one epoch on 5 000 real MNIST images, from the global weights."""
    import keras

    from decentralml.ml.models import build_model, model_tensors, set_model_tensors

    keras.utils.set_random_seed(11)
    model = build_model("mnist_mlp")
    set_model_tensors(model, global_tensors)
    (x, y), _ = mnist
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    return model_tensors(model)


@pytest.fixture(scope="module")
def evaluate_holdout(seed_model, mnist) -> Callable[[dict], dict]:
    """The creator's evaluator: load the tensors into a compiled model, evaluate the holdout."""
    from decentralml.ml.models import evaluate, model_tensors, set_model_tensors

    original = model_tensors(seed_model)
    _, (x, y) = mnist

    def evaluate_tensors(tensors) -> dict:
        set_model_tensors(seed_model, dict(tensors))
        try:
            return evaluate(seed_model, x, y)
        finally:
            set_model_tensors(seed_model, original)

    return evaluate_tensors


def _numpy_accuracy(tensors: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    """The seed MLP's forward pass in numpy: an independent check of what Keras reports."""
    hidden = np.maximum(x.reshape(len(x), -1) @ tensors["000.kernel"] + tensors["001.bias"], 0)
    logits = hidden @ tensors["002.kernel"] + tensors["003.bias"]
    return float(np.mean(np.argmax(logits, axis=1) == y))


@pytest.mark.slow
def test_min_accuracy_accepts_trained_weights_and_rejects_random_ones(
    round_: Round, layout: Layout, global_tensors, trained_tensors, evaluate_holdout, mnist
) -> None:
    _, (x, y) = mnist
    policy = make_policy(
        TaskConfig(
            validation_strategy=ValidationStrategy.CustomAccept,
            validators=["min_accuracy"],
            min_accuracy=0.5,
        )
    )
    params = {"min_accuracy": 0.5}
    verdicts = {}
    accuracies = {}
    for label, tensors in [("trained", trained_tensors), ("random", global_tensors)]:
        submission = round_.submit(encode(tensors, {"num_examples": 5000}), num_examples=5000)
        screened = round_.screen(submission, layout)  # the full path: storage, format, layout
        assert isinstance(screened, dict), screened
        candidate = Candidate(submission, screened, evaluate_holdout, params)
        verdicts[label] = policy.decide(candidate)
        accuracies[label] = candidate.holdout_metrics()["accuracy"]
        assert candidate.holdout_metrics()["examples"] == HOLDOUT
        # Keras' number is the real accuracy of these tensors (up to float ties on 2 000).
        assert abs(accuracies[label] - _numpy_accuracy(screened, x, y)) <= 2 / HOLDOUT

    assert accuracies["trained"] > 0.8  # ~0.87 after one epoch on 5 000 images
    assert accuracies["random"] < 0.3  # ~0.1: ten classes
    assert verdicts["trained"] == Verdict(
        1, True, f"held-out accuracy {accuracies['trained']:.4f} >= 0.5000"
    )
    assert verdicts["random"] == Verdict(
        2, False, f"held-out accuracy {accuracies['random']:.4f} is below 0.5000"
    )
