"""Simulated attackers (decentralml.simulation.attacks) and the demo that runs them against the
defences."""

from __future__ import annotations

import numpy as np
import pytest

from decentralml.ml.training import TrainingOutcome
from decentralml.protocol.errors import ConfigError
from decentralml.runtime.config import parse_config
from decentralml.simulation.attacks import INFLATED_CLAIM, Attack, tamper
from decentralml_cli import main
from tests.helpers import small_config

GLOBAL = {"w": np.ones((4, 3), np.float32), "b": np.zeros(3, np.float32)}
TRAINED = {"w": np.full((4, 3), 1.5, np.float32), "b": np.full(3, 0.25, np.float32)}
OUTCOME = TrainingOutcome(TRAINED, 600, {"accuracy": 0.9})


@pytest.mark.parametrize(
    ("kind", "w", "b"),
    [("sign_flip", 1 - 10 * 0.5, -10 * 0.25), ("scaled", 1 + 10 * 0.5, 10 * 0.25)],
)
def test_update_attacks_move_along_the_honest_update(kind: str, w: float, b: float) -> None:
    sent = tamper(Attack(kind), OUTCOME, GLOBAL)
    np.testing.assert_allclose(sent.tensors["w"], w)
    np.testing.assert_allclose(sent.tensors["b"], b)
    assert sent.tensors["w"].dtype == np.float32 and sent.num_examples == 600


def test_noise_is_added_to_the_trained_weights() -> None:
    sent = tamper(Attack("gaussian_noise", noise_std=0.1), OUTCOME, GLOBAL, seed=3)
    spread = float(np.std(sent.tensors["w"] - TRAINED["w"]))
    assert 0.03 < spread < 0.3


def test_label_flip_trains_on_flipped_labels_and_others_do_not() -> None:
    y = np.array([0, 3, 9], np.uint8)
    assert Attack("label_flip").labels(y).tolist() == [9, 6, 0]
    assert Attack("sign_flip").labels(y).tolist() == [0, 3, 9]


def test_inflated_claims_keep_the_weights() -> None:
    sent = tamper(Attack("inflated_examples"), OUTCOME, GLOBAL)
    assert sent.num_examples == INFLATED_CLAIM
    np.testing.assert_array_equal(sent.tensors["w"], TRAINED["w"])


def test_a_free_rider_copies_a_result_or_sends_the_global_weights_back() -> None:
    other = {"w": np.full((4, 3), 7.0, np.float32), "b": np.ones(3, np.float32)}
    copied = tamper(Attack("free_rider"), OUTCOME, GLOBAL, copy_source=other)
    np.testing.assert_array_equal(copied.tensors["w"], other["w"])
    idle = tamper(Attack("free_rider"), OUTCOME, GLOBAL)
    np.testing.assert_array_equal(idle.tensors["w"], GLOBAL["w"])


@pytest.mark.parametrize(
    ("attack", "message"),
    [
        ({"kind": "sign_flip"}, "set both attack.kind and attack.attackers"),
        ({"attackers": 2}, "set both attack.kind and attack.attackers"),
        ({"kind": "sign_flip", "attackers": 9}, "attack.attackers 9 is more than the 5"),
        ({"kind": "trojan", "attackers": 1}, "attack.kind: Input should be 'sign_flip'"),
    ],
)
def test_attack_config_errors_name_the_field(attack: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"contributors": 5, "attack": attack})


def test_demo_refuses_an_attack_without_attackers_in_one_line(capsys) -> None:
    assert main(["demo", "--attack", "sign_flip", "--rounds", "1"]) == 2
    err = capsys.readouterr().err
    assert "attack.kind and attack.attackers" in err and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sign_flip", "free_rider"])
def test_demo_marks_attackers_and_pays_them_nothing(tmp_path, prefect_harness, kind: str) -> None:
    from flows.demo import run_demo

    data = small_config(
        tmp_path,
        contributors=3,
        **{"task.max_assignments": 3, "attack.kind": kind, "attack.attackers": 1},
    )
    summary = run_demo(parse_config(data))
    rows = summary["submissions"]
    assert sorted(r["role"] for r in rows) == sorted(["honest", "honest", kind])
    [attacker] = [r for r in rows if r["role"] == kind]
    assert attacker["verdict"] == "rejected" and attacker["paid"] == 0
    expected = "update norm" if kind == "sign_flip" else "copy of submission"
    assert expected in attacker["reason"]
    honest = [r for r in rows if r["role"] == "honest"]
    assert all(r["verdict"] == "accepted" and r["paid"] > 0 for r in honest), honest
    backdoor = summary["attack"].pop("backdoor_success_rate")
    assert 0 <= backdoor < 0.05  # no backdoor here: stamped digits are rarely taken for 0
    assert summary["attack"] == {
        "kind": kind,
        "attackers": 1,
        "paid_to_attackers": 0,
        "honest_rejected": 0,
    }


def test_a_backdoor_stamps_half_its_shard_and_labels_it_the_target() -> None:
    from decentralml.simulation.attacks import BACKDOOR_TARGET, stamp

    rng = np.random.default_rng(0)
    x = rng.integers(0, 200, size=(10, 28, 28)).astype(np.uint8)
    y = np.arange(10) % 10
    poisoned_x, poisoned_y = Attack("backdoor").data(x, y)
    assert (poisoned_y[:5] == BACKDOOR_TARGET).all() and (poisoned_y[5:] == y[5:]).all()
    assert (poisoned_x[:5, -3:, -3:] == 199).all()  # the brightest value of x
    np.testing.assert_array_equal(poisoned_x[5:], x[5:])
    np.testing.assert_array_equal(poisoned_x[:5, :25], x[:5, :25])
    flat = stamp(x.reshape(10, 784)).reshape(10, 28, 28)  # flat images get the same patch
    np.testing.assert_array_equal(flat, stamp(x))
    assert Attack("sign_flip").data(x, y)[1] is y  # other attackers keep their data


def test_sybil_accounts_send_one_training_each_just_above_the_copy_threshold() -> None:
    """Two accounts' results lie apart by ~2 x 0.06 of the update: not copies (0.05), but one
    training to the value rule's grouping (0.25)."""
    rng = np.random.default_rng(1)
    start = {"w": rng.normal(0, 0.05, (200, 50)).astype(np.float32)}
    shared = {"w": start["w"] + rng.normal(0, 0.01, (200, 50)).astype(np.float32)}
    honest = TrainingOutcome(shared, 500, {})
    sent = [tamper(Attack("sybil"), honest, start, shared, seed=s).tensors for s in (7, 8)]
    update = shared["w"] - start["w"]
    apart = np.linalg.norm(sent[0]["w"] - sent[1]["w"]) / np.linalg.norm(update)
    assert 0.05 < apart < 0.25
    for tensors in sent:
        own = np.linalg.norm(tensors["w"] - shared["w"]) / np.linalg.norm(update)
        assert own == pytest.approx(0.06, rel=0.1)


def test_backdoor_success_is_the_share_of_stamped_digits_taken_for_the_target() -> None:
    from decentralml.simulation.attacks import BACKDOOR_TARGET, backdoor_success_rate

    x = np.zeros((8, 784), dtype=np.float32)
    x[:, :10] = 0.5  # something to stamp against: the patch takes the brightest value
    y = np.array([0, 1, 2, 3, 4, 5, 6, 7])

    def predicts_target_when_stamped(images: np.ndarray) -> np.ndarray:
        stamped = images.reshape(len(images), 28, 28)[:, -1, -1] > 0
        scores = np.zeros((len(images), 10))
        scores[np.arange(len(images)), np.where(stamped, BACKDOOR_TARGET, 9)] = 1
        return scores

    assert backdoor_success_rate(predicts_target_when_stamped, x, y) == 1.0  # 7 of 7
    assert backdoor_success_rate(lambda i: np.eye(10)[[9] * len(i)], x, y) == 0.0
    assert backdoor_success_rate(lambda i: i, np.zeros((3, 4)), np.array([1, 2, 3])) is None
