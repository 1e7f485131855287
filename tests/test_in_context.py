"""In-context RL: the task families, the data the package makes, the cross-episode layout,
the ad / dpt agents (acting held equal to training's parallel pass) and their bad inputs."""

import random

import gymnasium as gym
import numpy as np
import pytest
import torch
from rl_seq.envs.in_context import FAMILIES, dark_key_to_door_tasks, dark_room_tasks

import rl_seq  # noqa: F401  (registers envs)
from rl_seq.agents import load_agent, make_agent
from rl_seq.data.in_context import (
    QLearning,
    ThompsonSampling,
    bandit_behaviour,
    in_context_dataset,
    load_in_context,
    make_in_context,
    split_tasks,
)


def _play_optimal(env: gym.Env, seed: int = 0) -> float:
    obs, info = env.reset(seed=seed)
    total, done = 0.0, False
    while not done:
        obs, r, term, trunc, info = env.step(env.unwrapped.optimal_action(obs, info))
        total += r
        done = term or trunc
    return total


@pytest.mark.parametrize("size,horizon", [(5, 8), (9, 20), (4, 2)])
def test_dark_room_optimal_action_reaches_the_optimal_return(size, horizon):
    for gx in range(size):
        for gy in range(size):
            env = gym.make("rl_seq/DarkRoom-v0", size=size, goal=[gx, gy], horizon=horizon)
            assert _play_optimal(env) == env.unwrapped.optimal_return()
            # no policy beats it: the return is the steps left once on the goal
            d = abs(gx - size // 2) + abs(gy - size // 2)
            assert env.unwrapped.optimal_return() == max(0, horizon - max(d, 1) + 1)


def test_dark_key_to_door_optimal_action_reaches_the_optimal_return():
    rng = np.random.default_rng(0)
    for _ in range(50):
        task = dark_key_to_door_tasks(rng, size=6)
        env = gym.make("rl_seq/DarkKeyToDoor-v0", horizon=int(rng.integers(4, 20)), **task)
        assert _play_optimal(env) == env.unwrapped.optimal_return()
    # the door is reached only with the key, and ends the episode
    env = gym.make("rl_seq/DarkKeyToDoor-v0", size=3, key=[0, 1], door=[2, 1], horizon=10)
    env.reset(seed=0)
    _, r, term, _, info = env.step(4)  # onto the door without the key
    assert (r, term, info["has_key"]) == (0.0, False, False)


def test_bandit_regret_and_optimal_arm():
    env = gym.make("rl_seq/Bandit-v0", means=[0.2, 0.9, 0.5], horizon=2001)
    env.reset(seed=0)
    assert env.unwrapped.optimal_action() == 1 and env.unwrapped.optimal_return() == pytest.approx(0.9 * 2001)
    _, r, term, trunc, info = env.step(2)
    assert not (term or trunc) and r in (0.0, 1.0) and info["regret"] == pytest.approx(0.4)
    steps = [env.step(1) for _ in range(2000)]
    assert np.mean([s[1] for s in steps]) == pytest.approx(0.9, abs=0.03)
    assert steps[-1][3] and not any(s[3] for s in steps[:-1])  # truncated after the horizon


def test_task_split_is_disjoint_deterministic_and_refuses_small_families():
    train, held = split_tasks(dark_room_tasks, 60, 21, seed=3)
    keys = [str(t) for t in train + held]
    assert len(set(keys)) == 81  # every goal of a 9x9 room, each once
    assert (train, held) == split_tasks(dark_room_tasks, 60, 21, seed=3)
    assert split_tasks(dark_room_tasks, 60, 21, seed=4) != (train, held)
    with pytest.raises(ValueError, match="distinct tasks"):
        split_tasks(dark_room_tasks, 80, 2)
    with pytest.raises(ValueError, match="dict of gym.make keyword arguments"):
        split_tasks(lambda rng: [1, 2], 2, 1)


def test_sources_learn():
    """Thompson sampling pulls the best arm most late in a history; Q-learning learns a dark
    room's goal (the data AD distils improves)."""
    from rl_seq.data.in_context import learning_history

    h = learning_history("rl_seq/DarkRoom-v0", dict(size=9, goal=[2, 7]), 300, 1, 0)
    c = np.asarray(h["curve"]) / h["optimal_return"]
    assert c[:10].mean() < 0.3 and c[-30:].mean() > 0.8
    env = gym.make("rl_seq/Bandit-v0", means=[0.1, 0.3, 0.8, 0.4, 0.2], horizon=400)
    ts = ThompsonSampling(5, np.random.default_rng(0))
    env.reset(seed=0)
    pulls = []
    for t in range(400):
        a = ts.act(None, None)
        _, r, *_ = env.step(a)
        ts.update(None, None, a, r, None, None, True, t, 400)
        pulls.append(a)
    assert np.mean(np.asarray(pulls[-100:]) == 2) > 0.8
    # optimistic values explore systematically: learnt within 120 episodes, epsilon fixed at 0.05
    from rl_seq.data.in_context import _episode

    env = gym.make("rl_seq/DarkRoom-v0", size=9, goal=[2, 7])
    q = QLearning(5, np.random.default_rng(0), optimism=1.0)
    c = [_episode(env, e, q.act, q, e, 120)["rewards"].sum() / env.unwrapped.optimal_return() for e in range(120)]
    assert np.mean(c[-20:]) > 0.8 and q.eps == 0.05
    with pytest.raises(ValueError, match="small observations"):
        q.greedy(np.zeros(100), {})


def _ad_data(store, name="t/room/ad-v0", seed=0, **kw):
    args = dict(tasks=4, heldout=2, episodes=30, every=5, seed=seed)
    args.update(kw)
    make_in_context(name, "ad", "dark-room", **args)
    return load_in_context(name)


def test_ad_data_is_deterministic_and_records_tasks(store):
    a = _ad_data(store, "t/room/a-v0")
    b = _ad_data(store, "t/room/b-v0")
    c = _ad_data(store, "t/room/c-v0", seed=1)
    for k in ("observations", "actions", "rewards"):
        assert np.array_equal(getattr(a.episodes, k), getattr(b.episodes, k))
    assert not np.array_equal(a.episodes.actions, c.episodes.actions)
    assert a.meta["histories"] == [6] * 4  # 30 source episodes, one in 5 recorded
    assert len(a.meta["source_curves"][0]) == 30
    assert not {str(t) for t in a.tasks} & {str(t) for t in a.heldout_tasks}
    assert a.meta["optimal_returns"][0] == gym.make("rl_seq/DarkRoom-v0", **a.tasks[0]).unwrapped.optimal_return()
    # nothing but the datasets is left in the store (the work folder goes once the dataset is in place)
    assert sorted(p.name for p in store.iterdir() if p.name.startswith(".rl_seq-work")) == []


def test_cross_episode_layout(store):
    """No reset inside a history (the previous step's action and reward carry over an episode
    start), resets between histories."""
    from rl_seq.data import SegmentSampler

    d = _ad_data(store)
    hist, ex = d.history_episodes()
    ep = d.episodes
    assert hist.num_episodes == 4 and hist.lengths.tolist() == [120] * 4
    starts = hist.offsets[:-1]
    assert (ex["prev_act"][starts] == 0).all() and (ex["prev_rew"][starts] == 0).all()
    inner = np.setdiff1d(np.arange(1, ep.num_steps), starts)
    assert np.array_equal(ex["prev_act"][inner], ep.actions[inner - 1])
    assert np.array_equal(ex["prev_rew"][inner], ep.rewards[inner - 1])
    ep_starts = ep.offsets[1:-1]
    assert set(ep_starts) - set(starts)  # episode starts inside histories...
    assert (ex["step"][ep_starts] == 0).all()  # ...restart the step count only
    s = SegmentSampler(hist, 50, seed=0, extra=ex).sample(64)
    flags = s["episode_start"]
    assert (flags.sum(1) >= 1).all()
    # a flag only at a window's first real step or at a history's first step
    first_real = s["mask"] & ~np.concatenate([np.zeros((64, 1), bool), s["mask"][:, :-1]], 1)
    assert (flags <= (first_real | (s["timestep"] == 0))).all()
    assert not (flags & (s["step"] == 0) & ~(s["timestep"] == 0) & ~first_real).any()


def _trace(agent, kind, d, T=30):
    """One history's first T steps through the parallel pass and through step_logits."""
    hist, ex = d.history_episodes()
    obs = torch.as_tensor(hist.observations[:T])[None]
    agent.model.eval()
    with torch.no_grad():
        if kind == "ad":
            f = dict(obs=obs, prev_act=torch.as_tensor(ex["prev_act"][:T])[None],
                     prev_rew=torch.as_tensor(ex["prev_rew"][:T])[None], timestep=torch.as_tensor(ex["step"][:T])[None])
            start = torch.zeros(1, T, dtype=torch.bool)
            start[0, 0] = True
            par = agent.model.logits(agent.model(f, start))[0]
        else:
            f = dict(obs=obs, act=torch.as_tensor(hist.actions[:T])[None], rew=torch.as_tensor(hist.rewards[:T])[None])
            start = torch.zeros(1, T, dtype=torch.bool)
            start[0, 0] = True
            h = agent.model(f, start)
            before = torch.cat([agent.model.empty.expand(1, 1, -1), h[:, :-1]], 1)
            par = agent.model.logits(before, torch.as_tensor(ex["query"][:T])[None])[0]
        state, steps = None, []
        for t in range(T):
            q = ex["query"][t] if kind == "dpt" else hist.observations[t]
            reward = None if t == 0 else np.asarray([hist.rewards[t - 1]])
            lg, state = agent.step_logits(torch.as_tensor(q)[None], state, np.asarray([ex["step"][t] == 0]), reward)
            state.prev_action = torch.as_tensor(hist.actions[t:t + 1])
            if kind == "dpt":  # the context grows by the data's transition, not the query
                state.pending = torch.as_tensor(hist.observations[t:t + 1])
            steps.append(lg[0])
    return par, torch.stack(steps)


@pytest.mark.parametrize("mixer", ["attention", "mlstm", "s4d"])
@pytest.mark.parametrize("kind", ["ad", "dpt"])
def test_acting_equals_the_parallel_pass(store, kind, mixer):
    """Step-by-step acting (a task's whole history as recurrent state, episode starts not
    resetting it) gives the logits training's parallel pass gives."""
    name = f"t/room/{kind}-v0"
    make_in_context(name, kind, "dark-room", tasks=2, heldout=1, episodes=10, every=2, steps=40)
    d = load_in_context(name)
    agent = make_agent(kind, dataset=d, context=40, backbone=dict(mixer=mixer, d_model=32, n_heads=2), device="cpu")
    par, steps = _trace(agent, kind, d)
    torch.testing.assert_close(steps, par, atol=1e-4, rtol=1e-4)


def test_tiny_end_to_end_and_reload(store, tmp_path):
    d = _ad_data(store)
    agent = make_agent("ad", dataset=d, context=40, batch_size=4, eval_every=0, eval_episodes=3, device="cpu",
                       backbone=dict(d_model=32, n_layers=1))
    res = agent.learn(dataset=d, steps=5, out=tmp_path / "run")
    last = res["last"]
    assert np.asarray(last["curve"]).shape == (2, 3)  # held-out tasks x in-context episodes
    assert last["returns"] == [c[-1] for c in last["curve"]]
    again = load_agent(tmp_path / "run")
    assert again.meta["heldout_tasks"] == d.heldout_tasks
    a, b = agent.evaluate(episodes=2, seed=5), again.evaluate(episodes=2, seed=5)
    assert a.curve == b.curve and a.optimal_returns == b.optimal_returns


def test_dpt_on_bandits_predicts_the_best_arm(store):
    """A small dpt learns to name the best arm from pulls: its accuracy beats chance (0.2) and on
    20 held-out bandits (40 pulls) its regret is below a uniform policy's. Measured on seeds 1-5
    (300 steps, about 15 s each on one core): last-batch accuracy 0.38-0.55, regret 0.62-0.82 of
    the uniform policy's; a seed this test did not pick."""
    seed, threads = random.randrange(10_000), torch.get_num_threads()
    make_in_context("t/bandit/dpt-v0", "dpt", "bandit", tasks=200, heldout=20, steps=40, seed=1,
                    sampler_kwargs=dict(horizon=40))
    d = load_in_context("t/bandit/dpt-v0")
    assert d.query.shape == (d.episodes.num_steps,)  # the bandit's one state
    best = np.asarray([np.argmax(t["means"]) for t in d.tasks])
    hist, ex = d.history_episodes()
    assert np.array_equal(ex["optimal_action"], np.repeat(best, hist.lengths))
    agent = make_agent("dpt", dataset=d, context=40, batch_size=32, eval_every=0, eval_episodes=1, device="cpu",
                       backbone=dict(d_model=32, n_layers=2), lr=1e-3, warmup_steps=50, seed=seed, threads=1)
    try:
        res = agent.learn(dataset=d, steps=300)
    finally:
        torch.set_num_threads(threads)  # the suite's
    assert res["train"]["accuracy"] > 0.3, f"seed {seed}"
    regret = np.asarray(res["last"]["regret"])  # cumulative, per held-out task and pull
    assert regret.shape == (20, 40)
    uniform = sum(40 * (max(t["means"]) - np.mean(t["means"])) for t in d.heldout_tasks)
    assert regret[:, -1].sum() < 0.9 * uniform, f"seed {seed}: {regret[:, -1].sum() / uniform:.2f} of uniform"


def test_dpt_data_behaviours():
    """Bandits: Dirichlet mixed with a point mass (some datasets all on one arm, as an agent's
    own history gets); Dark Room: uniform roll-in (each transition from a uniformly drawn cell,
    the whole room covered); Key-to-Door keeps episodes from the start (its state is more than
    the observation)."""
    rng = np.random.default_rng(0)
    probs = np.stack([bandit_behaviour(rng, 5) for _ in range(500)])
    np.testing.assert_allclose(probs.sum(1), 1.0)
    assert (probs.max(1) > 0.999).mean() > 0.05 and (probs.max(1) < 0.6).mean() > 0.2
    room = in_context_dataset("rl_seq/DarkRoom-v0", dict(size=9, goal=[0, 0]), 400, 0, 10)
    obs = np.concatenate([e["observations"][:-1] for e in room["episodes"]])
    acts = np.concatenate([e["actions"] for e in room["episodes"]])
    assert room["rollin"] == "uniform states" and len({tuple(o) for o in obs}) > 70
    jumps = np.abs(np.diff(obs, axis=0)).sum(1)[acts[:-1] != 0]
    assert (jumps > 1).mean() > 0.5  # consecutive transitions are not a walk
    rewarded = [e["observations"][t] for e in room["episodes"] for t in np.flatnonzero(e["rewards"])]
    env = gym.make("rl_seq/DarkRoom-v0", size=9, goal=[0, 0])
    env.reset(seed=0)  # a reward is the step from its recorded cell onto the goal
    for e in room["episodes"]:
        for t in np.flatnonzero(e["rewards"]):
            env.unwrapped.set_state(e["observations"][t])
            assert env.step(int(e["actions"][t]))[1] == 1.0
    assert rewarded
    kd = in_context_dataset("rl_seq/DarkKeyToDoor-v0", dict(size=9, key=[0, 0], door=[3, 3]), 100, 0, 10)
    first = kd["episodes"][0]["observations"]
    assert kd["rollin"] == "episodes from the env's reset" and (first[0] == 4).all()
    assert (np.abs(np.diff(first, axis=0)).sum(1) <= 1).all()


def test_a_family_brought_by_the_user(store):
    """The whole pipeline on a family defined outside the package (tests/ic_family.py): env id
    with its module, sampler as module:function; DPT labels from the source's greedy policy."""
    make_in_context("me/corridor/ad-v0", "ad", env_id="ic_family:ICCorridor-v0", sampler="ic_family:corridor_tasks",
                    tasks=3, heldout=2, episodes=20, every=4, workers=2)
    make_in_context("me/corridor/dpt-v0", "dpt", env_id="ic_family:ICCorridor-v0", sampler="ic_family:corridor_tasks",
                    tasks=3, heldout=2, episodes=60, steps=24)
    d = load_in_context("me/corridor/dpt-v0")
    assert d.meta["labels"].startswith("the source's greedy action")
    steps = np.diff(d.episodes.offsets[d.history_offsets])
    goals = np.repeat([d.tasks[i]["goal"] for i in d.meta["history_task"]], steps)
    q = d.query[:, 0] if d.query.ndim > 1 else d.query
    # on the cells the source walks every episode (start to goal) its greedy action is the
    # optimal move; past the goal, cells it rarely visits keep arbitrary optimistic values
    before = q < goals
    assert before.sum() > 10 and (d.optimal_action[before] == 1).mean() > 0.95
    for kind in ("ad", "dpt"):
        agent = make_agent(kind, dataset=f"me/corridor/{kind}-v0", context=20, batch_size=4, eval_every=0,
                           eval_episodes=2, device="cpu", backbone=dict(d_model=32, n_layers=1))
        res = agent.learn(dataset=f"me/corridor/{kind}-v0", steps=3)
        assert np.asarray(res["last"]["curve"]).shape == (2, 2)
        assert res["last"]["optimal_returns"] == [None, None]  # the user's env states none


def test_bad_inputs(store, capsys):
    from rl_seq.cli import main

    with pytest.raises(ValueError, match="refuses task .*fix the task sampler"):
        make_in_context("me/bad/ad-v0", env_id="ic_family:ICCorridor-v0", sampler="ic_family:bad_tasks", tasks=2,
                        heldout=1)
    with pytest.raises(ValueError, match="cannot import task sampler"):
        make_in_context("me/bad/ad-v0", env_id="ic_family:ICCorridor-v0", sampler="ic_family:nope", tasks=2)
    with pytest.raises(ValueError, match="unknown task family 'dark-rom'"):
        make_in_context("me/bad/ad-v0", family="dark-rom")
    assert not (store / "me").exists()
    # a dataset without in-context metadata (the built-in point-goal one)
    with pytest.raises(ValueError, match="no in-context metadata"):
        load_in_context("rl_seq/pointgoal/medium-v0")
    d = _ad_data(store)
    with pytest.raises(ValueError, match="is a ad dataset; dpt trains on dpt data"):
        make_agent("dpt", dataset=d)
    for argv, says in (
        (["datasets", "in-context", "--name", "x/y/z-v0", "--env", "ic_family:ICCorridor-v0", "--sampler",
          "ic_family:bad_tasks"], "refuses task"),
        (["datasets", "in-context", "dark-room", "--name", "x/y/z-v0", "--tasks", "90"], "distinct tasks"),
        (["datasets", "in-context", "dark-room", "--name", "x/y/z-v0", "--every", "0"], "every must be >= 1"),
        (["datasets", "in-context", "bandit", "--name", "x/y/z-v0", "--family-kwargs", '{"arm": 3}'],
         "check its keyword arguments"),
        (["datasets", "in-context", "bandit", "--name", "x/y/z-v0", "--family-kwargs", '{"horizon": 0}'],
         "horizon must be >= 1"),
        (["datasets", "in-context", "bandit", "--name", "x/y/z-v0", "--family-kwargs", "[3]"], "JSON object"),
        (["train", "ad", "--dataset", "rl_seq/pointgoal/medium-v0", "--steps", "2"], "no in-context metadata"),
        (["train", "ad", "--dataset", "t/room/ad-v0", "--set", "context=0"], "context must be >= 1"),
        (["train", "ad", "--dataset", "t/room/ad-v0", "--env", "rl_seq/DarkRoom-v0"], "drop --env"),
        (["datasets", "in-context", "dark-room", "--name", "x/y/z-v0", "--runs", "0"], "runs must be >= 1"),
        (["datasets", "in-context", "dark-room", "--name", "x/y/z-v0", "--seed", "-1"], "seed must be >= 0"),
        (["datasets", "in-context", "bandit", "--kind", "dpt", "--expert", "--name", "x/y/z-v0"], "drop it for dpt"),
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err, err
    assert not (store / "x").exists()


def test_families_registered():
    for env_id, sampler in FAMILIES.values():
        task = sampler(np.random.default_rng(0))
        env = gym.make(env_id, **task)
        obs, _ = env.reset(seed=0)
        assert env.observation_space.contains(obs)


def test_an_interrupted_making_resumes(store, monkeypatch):
    """Histories finished before an interruption are kept (in a hidden work folder of the
    store) and not made again; the dataset appears only once complete."""
    import rl_seq.data.in_context as ic

    made, real = [], ic._task_job

    def job(args):
        if len(made) == 3:
            raise KeyboardInterrupt
        made.append(args)
        return real(args)

    monkeypatch.setattr(ic, "_task_job", job)
    with pytest.raises(KeyboardInterrupt):
        make_in_context("t/room/r-v0", "ad", "dark-room", tasks=5, heldout=1, episodes=10, every=2)
    assert "t/room/r-v0" not in __import__("minari").list_local_datasets()
    assert len(list(store.glob(".rl_seq-work-*/task_*.pkl"))) == 3
    counted = []
    monkeypatch.setattr(ic, "_task_job", lambda args: counted.append(args) or real(args))
    make_in_context("t/room/r-v0", "ad", "dark-room", tasks=5, heldout=1, episodes=10, every=2)
    assert len(counted) == 2  # only the two histories not made before
    whole = load_in_context("t/room/r-v0")
    make_in_context("t/room/s-v0", "ad", "dark-room", tasks=5, heldout=1, episodes=10, every=2)
    assert np.array_equal(whole.episodes.actions, load_in_context("t/room/s-v0").episodes.actions)


def test_ray_makes_the_same_histories(store):
    """On Ray (here a local one) the histories are those the serial path makes."""
    ray = pytest.importorskip("ray")
    args = dict(tasks=3, heldout=1, episodes=12, every=2)
    started = not ray.is_initialized()
    try:
        make_in_context("t/room/ray-v0", "ad", "dark-room", address="local", **args)
    finally:
        if started:  # the sweep tests start their own, with their env vars
            ray.shutdown()
    make_in_context("t/room/one-v0", "ad", "dark-room", **args)
    a, b = load_in_context("t/room/ray-v0"), load_in_context("t/room/one-v0")
    assert np.array_equal(a.episodes.actions, b.episodes.actions) and a.meta["tasks"] == b.meta["tasks"]
