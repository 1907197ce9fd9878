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
        ({"kind": "backdoor", "attackers": 1}, "attack.kind: Input should be 'sign_flip'"),
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
    assert summary["attack"] == {
        "kind": kind,
        "attackers": 1,
        "paid_to_attackers": 0,
        "honest_rejected": 0,
    }
