"""MiniGrid/BabyAI: the level env without mission text, the bot-made datasets, the symbolic
grid encoder, and a tiny offline run on image observations."""

import gymnasium as gym
import minari
import numpy as np
import pytest
import torch
from rl_seq.envs.minigrid import ONE_MISSION

from rl_seq.data.minigrid import bot_episode, level_episodes, make_minigrid_datasets
from rl_seq.tokenizer import SpaceEmbedding

pytest.importorskip("minigrid")  # the minigrid extra (in dev)

LEVEL = "BabyAI-GoToRedBallNoDists-v0"  # ~6 bot steps an episode


def test_level_env_gives_image_and_direction_and_refuses_a_changing_mission():
    env = gym.make("rl_seq/MiniGrid-v0", level=LEVEL)
    obs, info = env.reset(seed=0)
    assert set(obs) == {"image", "direction"} and obs["image"].shape == (7, 7, 3)
    assert env.observation_space.contains(obs) and info["mission"] == "go to the red ball"
    env.reset(seed=1)  # the same mission: fine
    varying = gym.make("rl_seq/MiniGrid-v0", level="BabyAI-GoToLocal-v0")  # 16+ missions
    with pytest.raises(ValueError, match="mission changes between episodes.*BabyAI-GoToRedBallGrey-v0"):
        for seed in range(20):
            varying.reset(seed=seed)
    with pytest.raises(ValueError, match="unknown MiniGrid/BabyAI level"):
        gym.make("rl_seq/MiniGrid-v0", level="BabyAI-NoSuchLevel-v0")
    assert all(lvl in gym.registry for lvl in ONE_MISSION)


def test_bot_solves_the_level_and_random_actions_cost_return():
    env = gym.make("rl_seq/MiniGrid-v0", level=LEVEL)
    bot = [bot_episode(env, s, 0.0)["rewards"].sum() for s in range(10)]
    rand = [bot_episode(env, s, 1.0)["rewards"].sum() for s in range(10)]
    assert min(bot) > 0.8 and np.mean(rand) < np.mean(bot) - 0.3
    ep = bot_episode(env, 3, 0.5)  # the bot replans after random actions and still records T+1 observations
    T = len(ep["actions"])
    assert ep["observations"]["image"].shape == (T + 1, 7, 7, 3) and ep["observations"]["direction"].shape == (T + 1,)
    assert ep["terminations"][-1] or ep["truncations"][-1]


def test_levels_are_deterministic_and_mixed_goes_from_random_to_the_bot():
    a, b = level_episodes(LEVEL, "medium", 4, 5), level_episodes(LEVEL, "medium", 4, 5)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["actions"], y["actions"])
        np.testing.assert_array_equal(x["observations"]["image"], y["observations"]["image"])
    mixed = level_episodes(LEVEL, "mixed", 10, 0)
    first, last = np.mean([len(e["actions"]) for e in mixed[:2]]), np.mean([len(e["actions"]) for e in mixed[-2:]])
    assert first > last  # random episodes are long (64 steps unless lucky), the bot's short


def test_make_datasets_writes_the_levels_with_ref_scores(store):
    out = make_minigrid_datasets(LEVEL, levels=("optimal", "random"), episodes=5, ref_episodes=4)
    ds = minari.load_dataset("minigrid/BabyAI-GoToRedBallNoDists/optimal-v0")
    assert ds.total_episodes == 5 and out["optimal"]["normalized_score"] > 0.8
    assert ds.storage.metadata["ref_max_score"] > ds.storage.metadata["ref_min_score"]
    assert ds.storage.metadata["rl_seq_minigrid"]["random_action_share"] == 0.0
    env = ds.recover_environment()  # the level env, mission dropped
    assert env.unwrapped.level == LEVEL and set(env.observation_space.spaces) == {"image", "direction"}
    again = make_minigrid_datasets(LEVEL, levels=("optimal",), episodes=5, ref_episodes=4)
    assert again["optimal"]["mean_return"] == out["optimal"]["mean_return"]


def test_an_interrupted_make_leaves_no_dataset(store, monkeypatch):
    import rl_seq.data.minigrid as mg

    real = mg.level_episodes

    def flaky(level, kind, *a, **k):
        if kind == "mixed":
            raise KeyboardInterrupt
        return real(level, kind, *a, **k)

    monkeypatch.setattr(mg, "level_episodes", flaky)
    with pytest.raises(KeyboardInterrupt):
        make_minigrid_datasets(LEVEL, levels=("optimal", "mixed"), episodes=3, ref_episodes=2)
    local = minari.list_local_datasets()
    assert "minigrid/BabyAI-GoToRedBallNoDists/optimal-v0" in local
    assert "minigrid/BabyAI-GoToRedBallNoDists/mixed-v0" not in local


@pytest.mark.parametrize("kwargs, match", [
    (dict(level="BabyAI-NoSuchLevel-v0"), "unknown MiniGrid/BabyAI level"),
    (dict(level="MiniGrid-Empty-5x5-v0"), "no BabyAI instructions"),
    (dict(level=LEVEL, levels=("expert",)), "unknown dataset level"),
    (dict(level=LEVEL, levels=()), "unknown dataset level"),
    (dict(level=LEVEL, episodes=0), "episodes must be >= 1"),
    (dict(level=LEVEL, ref_episodes=0), "ref_episodes must be >= 1"),
    (dict(level=LEVEL, medium_noise=1.5), "share of random actions"),
    (dict(level=LEVEL, medium_noise=-0.1), "share of random actions"),
    (dict(level=LEVEL, seed=-1), "seed must be >= 0"),
    (dict(level=LEVEL, namespace=""), "namespace '' must be"),
    (dict(level=LEVEL, namespace="me/"), "namespace 'me/' must be"),
    (dict(level=LEVEL, namespace="me//babyai"), "namespace 'me//babyai' must be"),
])
def test_bad_minigrid_requests_are_refused(store, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_minigrid_datasets(**kwargs)
    assert not minari.list_local_datasets()


def test_cli_refuses_bad_minigrid_input_with_exit_2(store, capsys):
    from rl_seq.cli import main

    assert main(["datasets", "minigrid", "BabyAI-GoToLocal-v0", "--episodes", "30", "--ref-episodes", "30"]) == 2
    err = capsys.readouterr().err
    assert "mission changes" in err and "Traceback" not in err
    assert main(["datasets", "minigrid", LEVEL, "--levels", "optimal", "expert"]) == 2
    assert "unknown dataset level" in capsys.readouterr().err
    assert not minari.list_local_datasets()


def test_small_uint8_images_are_read_as_symbol_grids_and_frames_through_the_strided_cnn():
    grid = SpaceEmbedding(gym.spaces.Box(0, 255, (7, 7, 3), np.uint8), 32)
    frame = SpaceEmbedding(gym.spaces.Box(0, 255, (84, 84, 3), np.uint8), 32)
    assert grid.kind == "grid" and frame.kind == "image"
    x = torch.zeros(1, 1, 7, 7, 3, dtype=torch.uint8)
    x[..., 3, 3, 0] = 5  # object 5 in the centre cell
    y = x.clone()
    y[..., 3, 3, 0] = 6  # another object: a different category, not a slightly brighter pixel
    z = x.clone()
    z[..., 3, 3, 1] = 5  # the same value in the colour channel means something else
    ex, ey, ez = grid(x), grid(y), grid(z)
    assert ex.shape == (1, 1, 32)
    assert not torch.allclose(ex, ey) and not torch.allclose(ex, ez)
    # the reference: each channel's value looked up in its own table, summed per cell
    cells = x[0, 0].long() + torch.arange(3) * 256
    ref = grid.net(grid.cells(cells).sum(-2).permute(2, 0, 1)[None])
    torch.testing.assert_close(ex[0], ref)


@pytest.mark.parametrize("algo", ["dt", "qt"])
def test_offline_agents_train_on_a_made_dataset_and_act_on_the_level(store, tmp_path, algo):
    import rl_seq

    make_minigrid_datasets(LEVEL, levels=("mixed",), episodes=10, ref_episodes=3)
    agent = rl_seq.make_agent(algo, dataset="minigrid/BabyAI-GoToRedBallNoDists/mixed-v0", context=5,
                              batch_size=4, eval_every=0, eval_episodes=1, warmup_steps=1, threads=1,
                              backbone=dict(d_model=32, n_layers=1, n_heads=2))
    agent.learn(dataset="minigrid/BabyAI-GoToRedBallNoDists/mixed-v0", steps=4, out=tmp_path / "run")
    res = agent.evaluate(episodes=1)  # the level env from the dataset; its Dict keys in another order
    assert len(res.returns) == 1
    env = gym.make("rl_seq/MiniGrid-v0", level=LEVEL)
    obs, _ = env.reset(seed=0)
    act, state = agent.predict(obs, None, np.ones(1, bool))
    assert env.action_space.contains(int(np.asarray(act).reshape(-1)[0]))
    again = rl_seq.load_agent(tmp_path / "run")
    a2, _ = again.predict(obs, None, np.ones(1, bool), deterministic=True)
    a1, _ = agent.predict(obs, None, np.ones(1, bool), deterministic=True)
    np.testing.assert_array_equal(a1, a2)


def test_frames_that_do_not_match_the_data_are_refused_by_name(store, tmp_path):
    """An agent trained on 7x7 views, evaluated on a level seen through 5x5 ones: one error
    naming both spaces and the fix, before any episode."""
    import rl_seq

    make_minigrid_datasets(LEVEL, levels=("mixed",), episodes=10, ref_episodes=3)
    ds = "minigrid/BabyAI-GoToRedBallNoDists/mixed-v0"
    agent = rl_seq.make_agent("dt", dataset=ds, context=5, batch_size=4, eval_every=0, eval_episodes=1,
                              warmup_steps=1, threads=1, backbone=dict(d_model=32, n_layers=1, n_heads=2))
    agent.learn(dataset=ds, steps=1, out=tmp_path / "run")
    small = gym.make("rl_seq/MiniGrid-v0", level=LEVEL, agent_view_size=5)
    with pytest.raises(ValueError, match=r"observation space .*\(5, 5, 3\).* does not match the agent's"):
        agent.evaluate(small, episodes=1)
    assert len(agent.evaluate(gym.make("rl_seq/MiniGrid-v0", level=LEVEL), episodes=1).returns) == 1


def test_odt_is_categorical_on_discrete_actions_offline_then_online(store, tmp_path):
    """odt's categorical policy: its likelihood is the logits' cross-entropy, its entropy the
    exact one, β = 0.2 log n; it trains offline, collects online trajectories and reloads."""
    import torch.nn.functional as F

    import rl_seq

    make_minigrid_datasets(LEVEL, levels=("mixed",), episodes=10, ref_episodes=3)
    ds = "minigrid/BabyAI-GoToRedBallNoDists/mixed-v0"
    agent = rl_seq.make_agent("odt", dataset=ds, context=5, batch_size=4, eval_every=0, eval_episodes=1,
                              warmup_steps=1, threads=1, updates_per_trajectory=2,
                              backbone=dict(d_model=32, n_layers=1, n_heads=2))
    agent.learn(dataset=ds, steps=3, online_steps=70, out=tmp_path / "run")
    assert agent.model.discrete and agent.target_entropy == pytest.approx(0.2 * np.log(7))
    h = torch.randn(2, 3, 32)
    act = torch.tensor([[0, 3, 6], [1, 1, 2]])
    real = torch.tensor([[True, True, False], [True, True, True]])
    log_lik, entropy = agent.policy_terms(h, act, real)
    logits = agent.model.head.net(h)
    ce = F.cross_entropy(logits.transpose(1, 2), act, reduction="none")
    p = logits.softmax(-1)
    ent = -(p * p.log()).sum(-1)
    torch.testing.assert_close(log_lik, -ce[real].mean())
    torch.testing.assert_close(entropy, ent[real].mean())
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert any("episode_return" in line for line in lines)  # online trajectories were collected in the level
    again = rl_seq.load_agent(tmp_path / "run")
    obs, _ = gym.make("rl_seq/MiniGrid-v0", level=LEVEL).reset(seed=0)
    np.testing.assert_array_equal(again.predict(obs, deterministic=True)[0], agent.predict(obs, deterministic=True)[0])
