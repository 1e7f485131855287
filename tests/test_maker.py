"""The D4RL-style dataset maker, on a test-sized budget (the full run is `slow`)."""

import pytest

from rl_seq.data import load_episodes
from rl_seq.data.maker import make_datasets

FAST = dict(n_steps=64, batch_size=64, n_epochs=1)


def test_make_levels_and_load_them_back(store):
    out = make_datasets("Pendulum-v1", "test/pend", expert_steps=256, steps_per_level=400, checkpoints=2,
                        n_envs=2, expert_kwargs=FAST, eval_episodes=2)
    assert set(out) == {"random", "medium", "medium-replay", "expert"}
    for level, summary in out.items():
        ep = load_episodes(f"test/pend/{level}-v0")
        assert ep.num_steps == summary["steps"] >= 400
        assert ep.env_id == "Pendulum-v1" and ep.ref_min_score is not None and ep.ref_max_score is not None


def test_maker_rejects_bad_names_and_levels(store):
    with pytest.raises(ValueError, match="NAMESPACE/NAME"):
        make_datasets("Pendulum-v1", "pend")
    with pytest.raises(ValueError, match="unknown level"):
        make_datasets("Pendulum-v1", "test/p", levels=["median"])


@pytest.mark.slow
def test_pendulum_levels_span_random_to_expert(store):
    """The issue's command, at its budget (about a minute and a half on 2 cores)."""
    out = make_datasets("Pendulum-v1", "test/pendulum", expert_steps=60_000, steps_per_level=10_000,
                        checkpoints=6, expert_kwargs=dict(n_steps=1024, gae_lambda=0.95, gamma=0.9, n_epochs=10,
                                                          learning_rate=1e-3, use_sde=True, sde_sample_freq=4))
    assert out["expert"]["normalized_score"] > 0.8
    assert out["random"]["normalized_score"] < 0.2
