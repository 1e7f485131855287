"""rl_seq inside Stable-Baselines3 loops."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import rl_seq
from rl_seq.sb3 import RlSeqHistoryExtractor, RlSeqRecurrentPolicy, episodes_from_replay_buffer

sb3_contrib = pytest.importorskip("sb3_contrib")


@pytest.mark.parametrize("backbone", ["relit", "gtrxl", "s4d", "mlstm", "lstm"])
def test_recurrent_ppo_with_each_memory_trains_and_round_trips(backbone, tmp_path):
    from sb3_contrib import RecurrentPPO

    env = gym.make("rl_seq/TMaze-v0", corridor_length=3)
    model = RecurrentPPO(RlSeqRecurrentPolicy, env, n_steps=64, batch_size=64, n_epochs=2, seed=0,
                         policy_kwargs=dict(backbone=backbone, d_model=16, n_layers=1, n_heads=2))
    model.learn(128)
    model.save(tmp_path / "m")
    loaded = RecurrentPPO.load(tmp_path / "m")
    obs = np.array([[1, 0, 1, 0], [0, 1, 1, 0]], np.float32)
    s1 = s2 = None
    starts = np.ones(2, bool)
    for _ in range(4):  # several steps: the carried memory must round-trip too
        a1, s1 = model.predict(obs, s1, starts, deterministic=True)
        a2, s2 = loaded.predict(obs, s2, starts, deterministic=True)
        assert np.array_equal(a1, a2) and np.allclose(s1[0], s2[0])
        starts = np.zeros(2, bool)


def test_recurrent_policy_sequence_equals_steps():
    """Training's parallel pass over a padded sequence equals the step-by-step rollout."""
    from sb3_contrib import RecurrentPPO

    model = RecurrentPPO(RlSeqRecurrentPolicy, gym.make("rl_seq/TMaze-v0"), n_steps=16, batch_size=16,
                         policy_kwargs=dict(backbone="relit", d_model=16, n_layers=2, n_heads=2))
    pol = model.policy.eval()
    T = 7
    obs = torch.rand(T, 4)
    starts = torch.zeros(T)
    starts[0] = starts[4] = 1
    feats = pol.extract_features(obs)
    zero = torch.zeros(1, 1, pol.lstm_actor.hidden_size)
    with torch.no_grad():
        seq, _ = pol._process_sequence(feats, (zero, zero), starts, pol.lstm_actor)
        state, outs = (zero, zero), []
        for t in range(T):
            o, state = pol._process_sequence(feats[t:t + 1], state, starts[t:t + 1], pol.lstm_actor)
            outs.append(o)
    assert (seq - torch.cat(outs)).abs().max() < 1e-5


def test_recurrent_ppo_relit_learns_short_tmaze():
    from sb3_contrib import RecurrentPPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    venv = make_vec_env("rl_seq/TMaze-v0", n_envs=8, seed=0, env_kwargs=dict(corridor_length=2))
    model = RecurrentPPO(RlSeqRecurrentPolicy, venv, n_steps=32, batch_size=128, n_epochs=4, seed=0,
                         learning_rate=1e-3, policy_kwargs=dict(backbone="relit", d_model=32, n_layers=1))
    model.learn(8_192)
    mean, _ = evaluate_policy(model, venv, n_eval_episodes=40)
    assert mean >= 0.9


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recurrent_ppo_gtrxl_learns_tmaze_corridor_20(seed):
    """The issue's target with SB3's own loop (about 5.5 minutes a seed on one core). Measured
    success rate of this form (one learn(250_000)) with the gtrxl memory: 4 of 4 seeds (0-3)
    ended at 1.00; at 150k steps seed 1 was at 0.45, so the budget is 250k (docs/results.md).
    One thread: no oversubscription beside other jobs."""
    from sb3_contrib import RecurrentPPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    venv = make_vec_env("rl_seq/TMaze-v0", n_envs=8, seed=seed, env_kwargs=dict(corridor_length=20))
    model = RecurrentPPO(RlSeqRecurrentPolicy, venv, n_steps=128, batch_size=256, n_epochs=4, seed=seed,
                         learning_rate=3e-4, ent_coef=0.01,
                         policy_kwargs=dict(backbone="gtrxl", d_model=64, n_layers=2))
    try:
        model.learn(250_000)
    finally:
        torch.set_num_threads(threads)
    mean, _ = evaluate_policy(model, venv, n_eval_episodes=100)
    assert mean >= 0.95


@pytest.mark.parametrize("algo,env_id", [("PPO", "CartPole-v1"), ("A2C", "CartPole-v1"), ("DQN", "CartPole-v1"),
                                         ("SAC", "Pendulum-v1"), ("TD3", "Pendulum-v1")])
def test_history_extractor_with_each_sb3_algorithm(algo, env_id):
    import stable_baselines3 as sb3
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecFrameStack

    venv = VecFrameStack(make_vec_env(env_id, n_envs=1, seed=0), n_stack=4)
    kwargs = dict(features_extractor_class=RlSeqHistoryExtractor,
                  features_extractor_kwargs=dict(n_stack=4, backbone="attention", d_model=16))
    extra = dict(n_steps=64, batch_size=64) if algo == "PPO" else {}
    extra.update(dict(learning_starts=100, buffer_size=1000, batch_size=32) if algo in ("DQN", "SAC", "TD3") else {})
    model = getattr(sb3, algo)("MlpPolicy", venv, policy_kwargs=kwargs, seed=0, **extra)
    extractors = [m for name, m in model.policy.named_modules()  # target networks only copy theirs, rarely
                  if isinstance(m, RlSeqHistoryExtractor) and "target" not in name]
    before = [torch.cat([p.detach().flatten().clone() for p in e.parameters()]) for e in extractors]
    model.learn(200)
    obs = venv.reset()
    action, _ = model.predict(obs)
    assert venv.action_space.contains(action[0])
    # the sequence model is the policy's features extractor, and SB3's updates trained it
    assert extractors and all(not torch.equal(b, torch.cat([p.detach().flatten() for p in e.parameters()]))
                              for b, e in zip(before, extractors))
    with pytest.raises(ValueError, match="VecFrameStack"):
        RlSeqHistoryExtractor(gym.spaces.Box(-1, 1, (10,)), n_stack=4)


def _point_env():
    import gymnasium as gym
    from stable_baselines3.common.monitor import Monitor

    import rl_seq  # noqa: F401  (registers the env in the worker process)

    return Monitor(gym.make("rl_seq/PointGoal-v0"))


def test_agents_in_subproc_and_vecnormalize_loops():
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import SubprocVecEnv, VecNormalize

    agent = rl_seq.make_agent("dt", dataset="rl_seq/pointgoal/medium-v0", eval_episodes=0,
                              backbone=dict(d_model=16, n_layers=1))
    ours = agent.evaluate(episodes=2, seed=3)
    inner = SubprocVecEnv([_point_env, _point_env])
    inner.seed(3)
    # the feed wraps the innermost VecEnv, so the agent sees raw rewards; VecNormalize sits outside
    venv = VecNormalize(agent.wrap_env(inner), norm_obs=False, norm_reward=True)
    rets, _ = evaluate_policy(agent, venv, n_eval_episodes=2, return_episode_rewards=True, warn=False)
    venv.close()
    assert sorted(np.round(rets, 3)) == sorted(np.round(ours.returns, 3))  # Monitor reports raw returns


def test_replay_buffer_becomes_episodes():
    from stable_baselines3.common.buffers import ReplayBuffer

    obs_space, act_space = gym.spaces.Box(-10, 10, (1,), np.float32), gym.spaces.Box(-1, 1, (1,), np.float32)
    buf = ReplayBuffer(10, obs_space, act_space, n_envs=1)
    # episode A: 3 steps, terminated; episode B: 2 steps, time-limit truncated; C: 1 unfinished step
    plan = [(0, False, False), (1, False, False), (2, True, False), (10, False, False), (11, True, True),
            (20, False, False)]
    for o, done, timeout in plan:
        buf.add(np.array([[o]], np.float32), np.array([[o + 1]], np.float32), np.array([[0.5]], np.float32),
                np.array([1.0]), np.array([done]), [{"TimeLimit.truncated": timeout}])
    ep = episodes_from_replay_buffer(buf)
    assert ep.lengths.tolist() == [3, 2, 1]
    assert ep.terminations.tolist() == [False, False, True, False, False, False]
    assert ep.truncations.tolist() == [False, False, False, False, True, True]
    assert ep.final_observations[:, 0].tolist() == [3, 12, 21]
    assert ep.observations[:, 0].tolist() == [0, 1, 2, 10, 11, 20]
