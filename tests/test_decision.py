"""Return-conditioned agents (dt, dc, ds4, lram): learning, acting, save/load, SB3 loops."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import make_minari

import rl_seq
from rl_seq.data import Episodes

DATA = "rl_seq/pointgoal/medium-v0"
TINY = dict(backbone=dict(d_model=32, n_layers=2, dropout=0.0), batch_size=32, warmup_steps=50,
            eval_every=0, eval_episodes=10, log_every=50, context=10)


@pytest.mark.parametrize("algo", ["dt", "dc", "ds4", "lram"])
def test_learns_point_goal_better_than_random(algo):
    agent = rl_seq.make_agent(algo, dataset=DATA, seed=0, lr=1e-3, **TINY)
    before = agent.evaluate(episodes=10).normalized_score
    out = agent.learn(DATA, steps=250)
    after = out["last"]["normalized_score"]
    assert after > 0.35 and after > before + 0.2, (before, after)


@pytest.fixture(scope="module")
def trained():
    agent = rl_seq.make_agent("dt", dataset=DATA, seed=0, lr=1e-3, **TINY)
    agent.learn(DATA, steps=100)
    return agent


def test_save_load_gives_identical_actions(trained, tmp_path):
    loaded = rl_seq.load_agent(trained.save(tmp_path / "m"))
    env = trained.make_env(n=3)
    obs, _ = env.reset(seed=0)
    s1 = s2 = None
    start = np.ones(3, bool)
    for _ in range(12):
        a1, s1 = trained.predict(obs, s1, start, rewards=np.zeros(3))
        a2, s2 = loaded.predict(obs, s2, start, rewards=np.zeros(3))
        assert np.array_equal(a1, a2)
        obs, *_ = env.step(a1)
        start = np.zeros(3, bool)


def test_cached_acting_equals_window_recompute_while_history_fits(trained):
    """Both acting modes run (the window mode keeps a K-step history, the cached one a
    backbone state) and give the same actions while the history fits in K steps."""
    K = trained.config.context
    env = trained.make_env(n=4)
    obs, _ = env.reset(seed=1)
    states = {"cached": None, "window": None}
    rewards, start = np.zeros(4), np.ones(4, bool)
    for t in range(K):
        acts = {}
        for mode in states:
            acting = {"mode": mode} if states[mode] is None else None
            acts[mode], states[mode] = trained.predict(obs, states[mode], start, rewards=rewards, acting=acting)
        assert np.abs(acts["cached"] - acts["window"]).max() < 1e-5, t
        obs, rewards, *_ = env.step(acts["cached"])
        start = np.zeros(4, bool)
    assert states["window"].history is not None and states["window"].backbone is None
    assert states["cached"].backbone is not None and states["cached"].history is None


def test_cached_acting_equals_the_model_on_the_whole_history_past_k(trained):
    """At every t up to 3K the cached action equals the trained model's parallel forward over
    the episode so far (attention's sliding window of K steps in every layer)."""
    K, n = trained.config.context, 2
    env = trained.make_env(n=n)
    obs, _ = env.reset(seed=3)
    hist = dict(obs=[], act=[], rtg=[], timestep=[])
    state, rewards, start = None, np.zeros(n), np.ones(n, bool)
    for t in range(3 * K + 1):
        act, state = trained.predict(obs, state, start, rewards=rewards)
        for k, v in (("obs", obs), ("act", act), ("rtg", state.rtg.copy()), ("timestep", state.t.copy())):
            hist[k].append(v)
        if t >= K - 1:
            f = {k: torch.as_tensor(np.stack(v, 1)) for k, v in hist.items()}
            f["obs"], f["rtg"] = f["obs"].float(), f["rtg"].float()
            first = torch.zeros(n, t + 1, dtype=torch.bool)
            first[:, 0] = True
            with torch.no_grad():
                h = trained.model.eval()(trained.model.fields(f["obs"], f["act"], f["rtg"], f["timestep"]), first)
                full = trained.model.action_outputs(h)
            assert torch.allclose(full[:, t], torch.as_tensor(act), atol=1e-5), t
        obs, rewards, *_ = env.step(act)
        start = np.zeros(n, bool)


def test_sb3_evaluate_policy_matches_agent_evaluate(trained):
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import DummyVecEnv

    ours = trained.evaluate(episodes=4, seed=123)
    venv = DummyVecEnv([lambda: gym.make("rl_seq/PointGoal-v0") for _ in range(4)])
    venv.seed(123)
    returns, lengths = evaluate_policy(trained, trained.wrap_env(venv), n_eval_episodes=4,
                                       return_episode_rewards=True, warn=False)
    assert sorted(np.round(returns, 4)) == sorted(np.round(ours.returns, 4))
    # the feed also wraps a plain gym env, inside SB3's own DummyVecEnv
    venv = DummyVecEnv([lambda: trained.wrap_env(gym.make("rl_seq/PointGoal-v0"))])
    venv.seed(7)
    r1, _ = evaluate_policy(trained, venv, n_eval_episodes=1, return_episode_rewards=True, warn=False)
    assert np.isclose(r1[0], trained.evaluate(episodes=1, seed=7).returns[0], atol=1e-4)


def test_rtg_drops_by_each_reward(trained):
    obs = np.zeros((2, 4), np.float32)
    _, s = trained.predict(obs, None, np.ones(2, bool))
    target = trained.meta["target_return"]
    _, s = trained.predict(obs, s, np.zeros(2, bool), rewards=np.array([-1.0, -2.5]))
    assert np.allclose(s.rtg, [target + 1.0, target + 2.5]) and s.t.tolist() == [1, 1]
    _, s = trained.predict(obs, s, np.array([True, False]), rewards=np.array([-1.0, -1.0]))
    assert np.allclose(s.rtg, [target, target + 3.5]) and s.t.tolist() == [0, 2]


def test_predict_errors_name_the_fix(trained):
    with pytest.raises(ValueError, match=r"expects \(4,\) .*\(n_envs, 4\)"):
        trained.predict(np.zeros(5, np.float32))
    _, s = trained.predict(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="wrap_env"):
        trained.predict(np.zeros(4, np.float32), s, np.zeros(1, bool))
    a, _ = trained.predict(np.zeros(4, np.float32))  # single observation in, single action out
    assert a.shape == (2,)
    with pytest.raises(ValueError, match="does not match"):
        trained.make_env("Pendulum-v1")


def test_discrete_actions_learn_with_cross_entropy():
    rng = np.random.default_rng(0)
    eps = []
    for _ in range(20):
        obs = rng.normal(size=(31, 2)).astype(np.float32)
        act = (obs[:-1, 0] > 0).astype(np.int64)  # the right action is readable from the state
        eps.append(dict(observations=obs, actions=act, rewards=act.astype(np.float32),
                        terminations=np.zeros(30, bool), truncations=np.eye(1, 30, 29, dtype=bool)[0]))
    data = Episodes.from_episode_list(eps, gym.spaces.Box(-np.inf, np.inf, (2,)), gym.spaces.Discrete(2),
                                      dataset_id="test/discrete")
    agent = rl_seq.make_agent("dt", dataset=data, lr=1e-3, **{**TINY, "eval_episodes": 0})
    agent.learn(data, steps=150)
    b = {k: torch.as_tensor(v) for k, v in __import__("rl_seq").data.SegmentSampler(data, 10).sample(64).items()}
    h = agent.model(agent.model.fields(b["obs"], b["act"], b["rtg"], b["timestep"]), b["episode_start"])
    logits = agent.model.action_outputs(h)
    acc = ((logits.argmax(-1) == b["act"]).float() * b["mask"]).sum() / b["mask"].sum()
    assert acc > 0.9


def test_dataset_from_minari_with_env_trains_and_evaluates(store):
    from conftest import point_episode
    make_minari("test/pg-v0", [point_episode(50, seed=i) for i in range(4)], ref_min_score=-50.0,
                ref_max_score=0.0)
    agent = rl_seq.make_agent("dt", dataset="test/pg-v0", **{**TINY, "eval_episodes": 2})
    out = agent.learn("test/pg-v0", steps=5)
    assert out["last"]["episodes"] == 2 and out["last"]["normalized_score"] is not None


@pytest.mark.parametrize("algo", ["dt", "dc", "ds4", "lram", "qt", "vdt"])
def test_bf16_autocast_trains_like_float32(algo):
    """``amp=bf16`` (the GPU default) runs every offline algorithm; CPU autocast checks the path."""
    losses, weights = {}, {}
    for amp in ("off", "bf16"):
        agent = rl_seq.make_agent(algo, dataset=DATA, seed=0, lr=1e-3, amp=amp,
                                  **{**TINY, "eval_episodes": 0, "log_every": 10})
        losses[amp] = agent.learn(DATA, steps=30)["train"]["loss"]
        weights[amp] = torch.cat([p.detach().flatten() for p in agent.model.parameters()])
    assert np.isfinite(losses["bf16"]) and abs(losses["bf16"] - losses["off"]) < 0.2 * abs(losses["off"]) + 1e-3
    assert not torch.equal(weights["off"], weights["bf16"])  # autocast really ran in bf16


@pytest.mark.slow
def test_torch_compile_training_matches_eager():
    """``compile=on`` (the GPU default) trains the same model; slow on CPU (about a minute to compile)."""
    out = {}
    for comp in ("off", "on"):
        agent = rl_seq.make_agent("dt", dataset=DATA, seed=0, lr=1e-3, compile=comp,
                                  **{**TINY, "eval_episodes": 0, "log_every": 10})
        agent.learn(DATA, steps=20)
        out[comp] = torch.cat([p.detach().flatten() for p in agent.model.parameters()])
    assert torch.allclose(out["off"], out["on"], atol=1e-4)
