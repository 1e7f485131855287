"""Episodes, loading, sampler, scores and the bad-input errors of the data layer."""

import gymnasium as gym
import numpy as np
import pytest
from conftest import make_minari, point_episode

from rl_seq.data import (
    BUILTIN,
    DatasetNotFoundError,
    Episodes,
    SegmentSampler,
    load_episodes,
    normalized_score,
)


def test_from_minari_offsets_returns_to_go_and_stats(store):
    eps = [point_episode(3, reward=[1, 2, 3]), point_episode(2, seed=1, reward=[10, -4])]
    make_minari("test/tiny-v0", eps, ref_min_score=0.0, ref_max_score=10.0)
    ep = load_episodes("test/tiny-v0")
    assert ep.offsets.tolist() == [0, 3, 5]
    assert ep.timesteps.tolist() == [0, 1, 2, 0, 1]
    assert ep.episode_returns().tolist() == [6, 6]
    assert np.allclose(ep.returns_to_go(), [6, 5, 3, 6, -4])
    assert np.allclose(ep.returns_to_go(0.5), [1 + 0.5 * 2 + 0.25 * 3, 2 + 1.5, 3, 10 - 2, -4])
    assert np.allclose(ep.observations[3], eps[1]["observations"][0])
    assert np.allclose(ep.final_observations[0], eps[0]["observations"][-1])
    mean, std = ep.observation_stats()
    allobs = np.concatenate([eps[0]["observations"][:-1], eps[1]["observations"][:-1]])
    assert np.allclose(mean, allobs.mean(0), atol=1e-6) and np.allclose(std, allobs.std(0), atol=1e-6)
    assert ep.env_id == "rl_seq/PointGoal-v0"
    assert np.allclose(ep.normalized_score([0, 5, 10]), [0, 0.5, 1])


def test_normalized_score_needs_reference_scores():
    assert normalized_score(75, 50, 100) == 0.5
    with pytest.raises(ValueError, match="no reference scores.*ref_min_score"):
        normalized_score(1.0, None, 2.0, "x/y-v0")


def test_unknown_dataset_lists_local_ids_and_says_how_to_download(store):
    make_minari("test/tiny-v0", [point_episode(3)])
    with pytest.raises(DatasetNotFoundError) as e:
        load_episodes("hopper/nope-v0")
    msg = str(e.value)
    assert "test/tiny-v0" in msg and "rl-seq datasets download hopper/nope-v0" in msg


def test_nan_rewards_and_observations_are_refused():
    bad = point_episode(4)
    bad["rewards"][2] = np.nan
    box = gym.spaces.Box(-1, 1, (4,))
    with pytest.raises(ValueError, match=r"rewards contain NaN or inf in episode\(s\) \[1\]"):
        Episodes.from_episode_list([point_episode(3), bad], box, gym.spaces.Box(-1, 1, (2,)))
    bad = point_episode(4)
    bad["observations"][0, 1] = np.inf
    with pytest.raises(ValueError, match="observations contain NaN"):
        Episodes.from_episode_list([bad], box, gym.spaces.Box(-1, 1, (2,)))


def test_empty_dataset_is_refused():
    with pytest.raises(ValueError, match="no episodes"):
        Episodes.from_episode_list([], gym.spaces.Box(-1, 1, (4,)), gym.spaces.Box(-1, 1, (2,)))


def test_spaces_mismatch_is_named():
    ep = Episodes.from_episode_list([point_episode(3)], gym.spaces.Box(-1, 1, (4,)),
                                    gym.spaces.Box(-1, 1, (2,)))
    with pytest.raises(ValueError, match="observation space .* does not match"):
        ep.check_spaces(gym.spaces.Box(-1, 1, (5,)), gym.spaces.Box(-1, 1, (2,)))
    with pytest.raises(ValueError, match="action space .* does not match"):
        ep.check_spaces(gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(3))


def test_dict_observations_are_flattened_in_key_order():
    space = gym.spaces.Dict({"b": gym.spaces.Box(-1, 1, (2,)), "a": gym.spaces.Box(-1, 1, (1,))})
    obs = {"b": np.ones((4, 2), np.float32), "a": np.zeros((4, 1), np.float32)}
    e = dict(observations=obs, actions=np.zeros((3, 1)), rewards=np.zeros(3),
             terminations=np.zeros(3, bool), truncations=np.zeros(3, bool))
    ep = Episodes.from_episode_list([e], space, gym.spaces.Box(-1, 1, (1,)))
    assert ep.observation_space.shape == (3,)
    order = list(space.spaces)
    expect = np.concatenate([obs[k][:3] for k in order], 1)
    assert np.array_equal(ep.observations, expect)
    with pytest.raises(TypeError, match=r"observation\['a'\] is Text.*FilterObservation"):
        Episodes.from_episode_list([e], gym.spaces.Dict(a=gym.spaces.Text(5)), gym.spaces.Discrete(2))


def make_eps(lengths):
    eps = [point_episode(n, seed=i, reward=np.arange(n, dtype=np.float32)) for i, n in enumerate(lengths)]
    return Episodes.from_episode_list(eps, gym.spaces.Box(-1, 1, (4,)), gym.spaces.Box(-1, 1, (2,)),
                                      dataset_id="t")


def test_sampler_windows_masks_and_padding():
    ep = make_eps([3, 10])
    s = SegmentSampler(ep, context=5, seed=0)
    b = s.sample(512)
    assert b["obs"].shape == (512, 5, 4) and b["mask"].dtype == bool
    for i in range(512):
        m = b["mask"][i]
        n = m.sum()
        assert m[5 - n:].all() and not m[:5 - n].any()  # padding on the left
        t = b["timestep"][i][m]
        assert np.array_equal(t, np.arange(t[0], t[0] + n))
        ep_i = 0 if np.allclose(b["obs"][i][m][0], ep.observations[t[0]]) and t[0] < 3 else 1
        start = ep.offsets[ep_i] + t[0]
        assert np.array_equal(b["obs"][i][m], ep.observations[start:start + n])
        assert np.allclose(b["rtg"][i][m], ep.returns_to_go()[start:start + n])
        assert np.all(b["obs"][i][~m] == 0)
        assert b["episode_start"][i].sum() == 1 and b["episode_start"][i][5 - n]


def test_sampler_extras_keep_their_dtype():
    """Padding must not turn a bool extra into integers: ``~`` of an int64 flag is -1 or -2, so
    an int ``terminal`` flag flipped the sign of every bootstrap at an episode's end."""
    ep = make_eps([3, 10])
    flags = np.zeros(ep.num_steps, bool)
    flags[ep.offsets[1:] - 1] = True
    b = SegmentSampler(ep, 5, seed=0, extra=dict(last=flags, w=np.ones(ep.num_steps, np.float32))).sample(64)
    assert b["last"].dtype == bool and b["w"].dtype == np.float32
    assert not b["last"][~b["mask"]].any() and b["last"][b["mask"]].any()


def test_sampler_is_length_weighted():
    ep = make_eps([10, 30])
    s = SegmentSampler(ep, context=4, seed=1)
    b = s.sample(40_000)
    first_obs = b["obs"][:, :, 0][np.arange(40_000), (~b["mask"]).sum(1)]
    from_short = np.isin(first_obs, ep.observations[:10, 0]).mean()
    assert abs(from_short - 0.25) < 0.01  # 10 of 40 steps


def test_sampler_short_episode_policies():
    ep = make_eps([3, 10])
    with pytest.raises(ValueError, match="shorter than the context K=5.*'pad'"):
        SegmentSampler(ep, 5, short_episodes="error")
    s = SegmentSampler(ep, 5, short_episodes="drop")
    assert s.episodes.num_episodes == 1
    with pytest.raises(ValueError, match="every episode .* shorter than the context K=20.*context=10"):
        SegmentSampler(ep, 20)


def test_sampler_state_round_trip():
    s = SegmentSampler(make_eps([10, 30]), 4, seed=3)
    st = s.state_dict()
    a = s.sample(8)["obs"]
    s.load_state_dict(st)
    assert np.array_equal(a, s.sample(8)["obs"])


def test_builtin_datasets_are_made_on_first_use(store):
    ep = load_episodes("rl_seq/pointgoal/medium-v0")
    assert ep.num_episodes == 200 and ep.num_steps == 10_000
    assert ep.ref_min_score < ep.ref_max_score
    score = ep.normalized_score(ep.episode_returns()).mean()
    assert 0.3 < score < 0.8
    assert set(BUILTIN) >= {"rl_seq/pointgoal/expert-v0", "rl_seq/pointgoal/random-v0"}


def test_a_relative_datasets_path_works(tmp_path, monkeypatch):
    """``MINARI_DATASETS_PATH=../data`` (relative, as in the README's commands) makes and loads
    a built-in dataset (minari alone doubles a relative root inside its file paths)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("MINARI_DATASETS_PATH", "../data")
    ep = load_episodes("rl_seq/pointgoal/random-v0")
    assert ep.num_episodes == 200 and (tmp_path / "data" / "rl_seq" / "pointgoal" / "random-v0").is_dir()
    assert not list((tmp_path / "data").glob(".rl_seq-tmp-*"))  # the staging folder is gone
