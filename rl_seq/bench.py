"""Speed benchmarks (``rl-seq bench ...``): each prints a table and writes JSON.

- ``kernels``: per mixer at D=128, 4 heads, 3 blocks - training throughput (tokens/s,
  forward+backward, B=64, T=60), per-step acting latency after histories of 20..10000
  tokens, acting-state bytes per env; the Decision Transformer rollout that recomputes its
  K-step window against the KV cache; AGaLiTe against Transformer-XL attention.
- ``sampler``: segment-sampler batches/s (64 x 20).
- ``train``: training step time and acting ms/step of each offline algorithm at the
  reference DT size (embed 128, 3 layers, K=20, batch 64), at 1 and 2 threads.
- ``in-context``: ``ad``'s acting cost per step (``predict``, one env) after in-context
  histories of 100..4000 transitions, per mixer at the preset size: attention with its KV
  cache and recomputing the whole context, and the recurrent mixers.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rl_seq.kernels import MIXERS
from rl_seq.nets.backbone import BackboneConfig, Block
from rl_seq.plot import print_table


def _timeit(fn, reps: int, warmup: int = 2) -> float:
    """Median seconds per call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _stack(mixer: str, D: int, heads: int, layers: int, **opts) -> nn.ModuleList:
    cfg = BackboneConfig(mixer=mixer, d_model=D, n_heads=heads if mixer not in ("s4d", "conv", "lstm") else 1,
                         n_layers=layers, dropout=0.0, mixer_options=opts)
    return nn.ModuleList(Block(cfg) for _ in range(layers))


def _forward(blocks, x, states=None, resets=None):
    new = []
    for i, b in enumerate(blocks):
        x, s = b(x, None if states is None else states[i], resets)
        new.append(s)
    return x, new


def _step(blocks, x, states):
    new = []
    for b, s in zip(blocks, states):
        x, s = b.step(x, s, None)
        new.append(s)
    return x, new


def _state_bytes(states) -> int:
    if isinstance(states, torch.Tensor):
        return states.numel() * states.element_size()
    return sum(_state_bytes(s) for s in states)


def _env_info() -> dict:
    """What a timing was taken on: torch, CPU threads and, where one is used, the GPU."""
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return dict(torch=torch.__version__, threads=torch.get_num_threads(), machine=platform.machine(),
                processor=platform.processor() or platform.machine(), gpu=gpu)


def bench_kernels(out: str | Path = "bench_kernels.json", histories=(20, 100, 1000, 10000),
                  quick: bool = False) -> dict:
    torch.manual_seed(0)
    D, H, L = (32, 4, 1) if quick else (128, 4, 3)
    B, T = (4, 12) if quick else (64, 60)
    histories = [h for h in histories if not quick or h <= 100]
    opts = {"xl_attention": dict(memory=128)}
    results = {}
    rows = []
    for name in MIXERS:
        blocks = _stack(name, D, H, L, **opts.get(name, {}))
        x = torch.randn(B, T, D)

        def train_step(blocks=blocks, x=x):
            blocks.zero_grad(set_to_none=True)
            y, _ = _forward(blocks, x)
            y.mean().backward()

        tps = B * T / _timeit(train_step, 3 if quick else 5)
        lat, mem = {}, {}
        with torch.no_grad():
            for hist in histories:
                states = None
                for c in range(0, hist, 500):  # build the history in chunks
                    _, states = _forward(blocks, torch.randn(1, min(500, hist - c), D), states)
                xt = torch.randn(1, D)
                reps = 20 if quick else 50

                def one_step(blocks=blocks, xt=xt, states=states):
                    _step(blocks, xt, states)  # always from the same history

                lat[hist] = _timeit(one_step, reps) * 1e3
                mem[hist] = _state_bytes(states)
        results[name] = dict(train_tokens_per_s=tps, step_ms=lat, state_bytes=mem)
        rows.append([name, tps] + [lat[h] for h in histories] + [mem[histories[-1]]])
    print_table(f"mixers: D={D}, {H} heads, {L} blocks; train B={B}, T={T}; acting B=1",
                 ["mixer", "train tok/s"] + [f"ms/step @{h}" for h in histories]
                 + [f"state B @{histories[-1]}"], rows)

    # the DT rollout: recompute the K-step window (3K tokens) vs KV cache (3 tokens a step)
    K = 10 if quick else 100
    blocks = _stack("attention", D, 1, L, window=3 * K)
    window = torch.randn(1, 3 * K, D)
    with torch.no_grad():
        _, states = _forward(blocks, window)
        recompute = _timeit(lambda: _forward(blocks, window), 20) * 1e3
        # a_{t-1}, R_t, s_t extend the cache in one stateful forward call per block
        cached = _timeit(lambda: _forward(blocks, window[:, :3], states), 20) * 1e3
    results["dt_rollout"] = dict(K=K, recompute_ms_per_step=recompute, cached_ms_per_step=cached,
                                 speedup=recompute / cached)
    print_table(f"Decision Transformer acting, K={K} steps (3K tokens), per env step",
                 ["window recompute ms", "KV cache ms", "speed-up"], [[recompute, cached, recompute / cached]])

    # AGaLiTe vs Transformer-XL attention at equal width and memory 128, after 1000 steps
    h = max(histories)
    ag, xl = results["agalite"], results["xl_attention"]
    results["agalite_vs_xl"] = dict(
        history=h, step_cost_ratio=ag["step_ms"][h] / xl["step_ms"][h],
        state_ratio=ag["state_bytes"][h] / xl["state_bytes"][h])
    targets = {}
    for name in ("linear", "agalite", "s4d", "mlstm", "conv", "lstm"):
        r = results[name]["step_ms"][max(histories)] / results[name]["step_ms"][min(histories)]
        targets[f"{name}: step @{max(histories)} / @{min(histories)} <= 1.5"] = (r, r <= 1.5)
    targets["attention KV cache >= 5x faster than recompute"] = (results["dt_rollout"]["speedup"],
                                                                results["dt_rollout"]["speedup"] >= 5)
    a = results["agalite_vs_xl"]
    targets["agalite/xl step cost <= 0.6"] = (a["step_cost_ratio"], a["step_cost_ratio"] <= 0.6)
    targets["agalite/xl state bytes <= 0.5"] = (a["state_ratio"], a["state_ratio"] <= 0.5)
    results["targets"] = {k: dict(value=v, met=bool(m)) for k, (v, m) in targets.items()}
    print_table("targets", ["target", "value", "met"], [[k, v, "yes" if m else "NO"] for k, (v, m) in targets.items()])
    results["env"] = _env_info()
    Path(out).write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {out}")
    return results


def bench_sampler(dataset: str, out: str | Path = "bench_sampler.json", batch: int = 64, K: int = 20) -> dict:
    from rl_seq.data import SegmentSampler, load_episodes

    ep = load_episodes(dataset)
    s = SegmentSampler(ep, K, seed=0)
    sec = _timeit(lambda: s.sample(batch), 2000, warmup=20)
    res = dict(dataset=dataset, steps=ep.num_steps, batch=batch, context=K, ms_per_batch=sec * 1e3,
               batches_per_s=1 / sec, env=_env_info())
    print_table(f"segment sampler on {dataset}", ["steps", "batch x K", "ms / batch", "batches / s"],
                 [[ep.num_steps, f"{batch} x {K}", sec * 1e3, 1 / sec]])
    Path(out).write_text(json.dumps(res, indent=2))
    return res


def synthetic_episodes(n_episodes: int = 20, length: int = 1000, obs_dim: int = 11, act_dim: int = 3):
    """Hopper-shaped random episodes (for timing only)."""
    import gymnasium as gym

    from rl_seq.data import Episodes

    rng = np.random.default_rng(0)
    eps = [dict(observations=rng.normal(size=(length + 1, obs_dim)).astype(np.float32),
                actions=rng.uniform(-1, 1, (length, act_dim)).astype(np.float32),
                rewards=rng.normal(size=length).astype(np.float32), terminations=np.zeros(length, bool),
                truncations=np.eye(1, length, length - 1, dtype=bool)[0]) for _ in range(n_episodes)]
    return Episodes.from_episode_list(eps, gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32),
                                      gym.spaces.Box(-1, 1, (act_dim,), np.float32), dataset_id="synthetic")


def bench_train(out: str | Path = "bench_train.json", threads=(1, 2), quick: bool = False,
                algos=None, compile: str = "auto") -> dict:
    """Training step (sample + forward + backward + AdamW) and acting latency per algorithm
    (``algos``: all offline ones by default, but the in-context ones: ``bench in-context``);
    ``compile`` is the agents' config value."""
    import logging

    import rl_seq
    from rl_seq.agents import ALGOS

    logging.getLogger("rl_seq").setLevel(logging.WARNING)  # no progress lines inside the timing

    data = synthetic_episodes(length=200 if quick else 1000)
    size = dict(backbone=dict(d_model=32, n_layers=1)) if quick else {}
    res, rows = {}, []
    old = torch.get_num_threads()
    for th in threads:
        torch.set_num_threads(th)
        for algo in algos or [name for name, cls in ALGOS.items() if not (cls.online or cls.in_context)]:
            torch.manual_seed(0)
            agent = rl_seq.make_agent(algo, dataset=data, eval_episodes=0, compile=compile, **size)
            cfg = agent.config
            agent.learn(data, steps=2)  # warm-up (allocations, first-call costs, compilation)
            n = 3 if quick else 12
            t0 = time.perf_counter()
            agent.learn(data, steps=n)  # sample + forward + backward + AdamW, the real update
            step_s = (time.perf_counter() - t0) / n
            obs = np.zeros((1, data.observation_space.shape[0]), np.float32)
            state = None

            def act(agent=agent, obs=obs):
                nonlocal state
                _, state = agent.predict(obs, state, np.array([state is None]), rewards=np.zeros(1))

            act_ms = _timeit(act, 50 if quick else 200, warmup=5) * 1e3
            res[f"{algo}@{th}"] = dict(algo=algo, threads=th, context=cfg.context, compile=compile,
                                       train_step_s=step_s, act_ms_per_step=act_ms)
            rows.append([algo, th, cfg.context, step_s, act_ms])
    torch.set_num_threads(old)
    print_table(f"offline algorithms at the reference DT size (embed 128, 3 layers, batch 64), compile={compile}",
                 ["algo", "threads", "K", "train s/step", "act ms/step"], rows)
    res["env"] = _env_info()
    Path(out).write_text(json.dumps(res, indent=2))
    return res


def bench_ppo(out: str | Path = "bench_ppo.json", env_id: str = "CartPole-v1", steps: int = 8192,
              n_envs: int = 8, n_steps: int = 128, hidden: int = 256, threads: int = 1,
              backbones=("lstm", "agalite"), agents=("lstm", "gtrxl", "relit")) -> dict:
    """Env steps/s of recurrent PPO on the same env, n_envs and rollout size (rollout and
    update both count): sb3-contrib's RecurrentPPO (MlpLstmPolicy, LSTM ``hidden``, its
    defaults: 10 epochs of 128-step minibatches, the critic with its own LSTM) against rl_seq's
    PPO on each backbone at width ``hidden``: at its defaults (the same update), with one
    memory shared by actor and critic, and with the cheap update (4 epochs × 4 minibatches,
    shared). Then each of ``agents`` exactly as ``rl-seq train AGENT`` builds it (its own
    network and update; at 8 × 128 steps that is the same 10 × 128 with a critic memory): what a
    user of either package's defaults gets."""
    import logging

    import rl_seq

    logging.getLogger("rl_seq").setLevel(logging.WARNING)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    res, rows = {}, []
    base = None
    try:
        from sb3_contrib import RecurrentPPO
        from stable_baselines3.common.env_util import make_vec_env

        venv = make_vec_env(env_id, n_envs=n_envs, seed=0)
        model = RecurrentPPO("MlpLstmPolicy", venv, n_steps=n_steps, policy_kwargs=dict(lstm_hidden_size=hidden),
                             seed=0, verbose=0)
        model.learn(n_envs * n_steps)  # warm-up
        t = time.perf_counter()
        model.learn(steps, reset_num_timesteps=False)
        base = steps / (time.perf_counter() - t)
        rows.append(["sb3-contrib RecurrentPPO (LSTM)", "defaults: 10 x 128, critic LSTM", hidden, base, 1.0])
    except ImportError:
        print("sb3-contrib is not installed (pip install 'rl-seq[contrib]'): no baseline row")
    res["sb3_contrib_RecurrentPPO"] = base
    mb = n_envs * n_steps // 128
    settings = {"defaults: 10 x 128, critic memory": dict(n_minibatches=mb),
                "10 x 128, shared memory": dict(n_minibatches=mb, critic="shared"),
                "4 x 256, shared memory": dict(n_epochs=4, n_minibatches=n_envs * n_steps // 256, critic="shared")}
    for mixer in backbones:
        for label, extra in settings.items():
            opts = dict(eta=4, r=4) if mixer == "agalite" else {}
            agent = rl_seq.make_agent("lstm", env_id, n_envs=n_envs, n_steps=n_steps, seq_len=32, eval_episodes=0,
                                      backbone=dict(mixer=mixer, d_model=hidden, n_layers=1,
                                                    n_heads=4 if mixer == "agalite" else 1, mixer_options=opts),
                                      **extra)
            agent.learn(env_id, steps=n_envs * n_steps)
            t = time.perf_counter()
            agent.learn(env_id, steps=steps)
            sps = steps / (time.perf_counter() - t)
            res[f"rl_seq_{mixer}_{label.split(':')[0].replace(', ', '_').replace(' ', '')}"] = sps
            rows.append([f"rl_seq PPO ({mixer})", label, hidden, sps, sps / base if base else float("nan")])
    for name in agents:
        agent = rl_seq.make_agent(name, env_id, n_envs=n_envs, n_steps=n_steps, eval_episodes=0)
        cfg, bb = agent.config, agent.config.backbone
        agent.learn(env_id, steps=n_envs * n_steps)
        t = time.perf_counter()
        agent.learn(env_id, steps=steps)
        sps = steps / (time.perf_counter() - t)
        res[f"rl_seq_{name}_agent_defaults"] = sps
        rows.append([f"rl_seq `{name}` agent ({bb.mixer}, {bb.n_layers} x {bb.d_model})",
                     f"its defaults: {cfg.n_epochs} x {n_envs * n_steps // cfg.n_minibatches}, {cfg.critic} critic",
                     bb.d_model, sps, sps / base if base else float("nan")])
    res.update(env=_env_info(), env_id=env_id, n_envs=n_envs, n_steps=n_steps, hidden=hidden, threads=threads)
    torch.set_num_threads(old)
    print_table(f"recurrent PPO on {env_id}: {n_envs} envs x {n_steps} steps, {threads} thread(s); "
                 "update = epochs x minibatch steps", ["implementation", "update", "hidden", "env steps/s",
                                                       "x sb3-contrib"], rows)
    Path(out).write_text(json.dumps(res, indent=2))
    return res


def bench_sb3(out: str | Path = "bench_sb3.json", env_id: str = "CartPole-v1", steps: int = 4096,
              n_envs: int = 8, hidden: int = 64, threads: int = 1, memories=("lstm", "relit"),
              rounds: int = 3) -> dict:
    """sb3-contrib's RecurrentPPO, its own loop and defaults, with the stock MlpLstmPolicy
    against RlSeqRecurrentPolicy on each rl_seq memory, at equal hidden size: env steps/s.
    The policies take turns (``rounds`` rounds of ``steps`` env steps each) and the median
    round counts, so a busy neighbour on a shared machine slows them all alike."""
    from sb3_contrib import RecurrentPPO
    from stable_baselines3.common.env_util import make_vec_env

    from rl_seq.sb3 import RlSeqRecurrentPolicy

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    variants = {"stock MlpLstmPolicy (LSTM)": ("MlpLstmPolicy", dict(lstm_hidden_size=hidden))}
    for mem in memories:
        variants[f"RlSeqRecurrentPolicy ({mem})"] = (RlSeqRecurrentPolicy,
                                                     dict(backbone=mem, d_model=hidden, n_layers=1))
    models = {}
    for name, (policy, kwargs) in variants.items():
        models[name] = RecurrentPPO(policy, make_vec_env(env_id, n_envs=n_envs, seed=0), policy_kwargs=kwargs,
                                    seed=0, verbose=0)
        models[name].learn(n_envs * models[name].n_steps)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            t = time.perf_counter()
            model.learn(steps, reset_num_timesteps=False)
            times[name].append(steps / (time.perf_counter() - t))
    res, rows, base = {}, [], None
    for name, sps_all in times.items():
        sps = float(np.median(sps_all))
        base = base or sps
        res[name] = dict(env_steps_per_s=sps, rounds=sps_all)
        rows.append([name, hidden, sps, sps / base, " ".join(f"{x:.0f}" for x in sps_all)])
    torch.set_num_threads(old)
    print_table(f"sb3-contrib RecurrentPPO on {env_id}, {n_envs} envs, defaults, {threads} thread(s); "
                 f"median of {rounds} interleaved rounds",
                 ["policy", "hidden", "env steps/s", "x stock", "rounds"], rows)
    res.update(env=_env_info(), env_id=env_id, n_envs=n_envs, hidden=hidden, threads=threads)
    Path(out).write_text(json.dumps(res, indent=2))
    return res


# -- the `rl-seq bench` command ------------------------------------------------------------------
EXAMPLES = """examples:
  rl-seq bench kernels --json bench_kernels.json
  rl-seq bench sampler --dataset hopper/medium-v0
  rl-seq bench train --threads 1 2
  rl-seq bench train --algos dt --threads 1 --compile on
  rl-seq bench ppo --env CartPole-v1 --threads 1
  rl-seq bench sb3 --hidden 64"""


def bench_in_context(out: str | Path = "bench_in_context.json", contexts=(100, 500, 1000, 4000),
                     mixers=("attention", "mlstm", "linear", "agalite", "s4d"), quick: bool = False) -> dict:
    import gymnasium as gym

    from rl_seq.agents import make_agent

    torch.manual_seed(0)
    contexts = (50, 200) if quick else contexts
    spaces = (gym.spaces.MultiDiscrete([9, 9]), gym.spaces.Discrete(5))
    obs, reward = np.array([[4, 4]]), np.zeros(1)
    reps = 5 if quick else 100
    results, rows = {}, []

    def timed_predict(agent, state):
        return _timeit(lambda: agent.predict(obs, state, np.zeros(1, bool), rewards=reward), reps, warmup=reps // 5)

    for mixer in mixers:
        lat = {}
        for c in contexts:
            agent = make_agent("ad", spaces, context=max(contexts), device="cpu", threads=torch.get_num_threads(),
                               backbone=dict(mixer=mixer))
            agent.model.eval()
            with torch.no_grad():  # the history: c transitions through the backbone, in chunks
                states = None
                for i in range(0, c, 500):
                    _, states = agent.model.backbone.forward_tokens(torch.randn(1, min(500, c - i), 64), states)
            state = agent.new_state(1)
            state.backbone, state.started = states, True
            lat[c] = timed_predict(agent, state) * 1e3
        results[mixer] = dict(step_ms=lat)
        rows.append([mixer] + [lat[c] for c in contexts])
        if mixer == "attention":  # without a cache: the whole context again at every step
            backbone = make_agent("ad", spaces, context=max(contexts), device="cpu",
                                  backbone=dict(mixer=mixer)).model.backbone.eval()
            rec = {}
            with torch.no_grad():
                for c in contexts:
                    x = torch.randn(1, c, 64)
                    rec[c] = _timeit(lambda x=x, bb=backbone: bb.forward_tokens(x), max(3, reps // 5)) * 1e3
            results["attention (recompute)"] = dict(step_ms=rec)
            rows.append(["attention (recompute)"] + [rec[c] for c in contexts])
    lo, hi = min(contexts), max(contexts)
    print_table(f"ad acting, ms per step after a context of N transitions (D=64, 3 blocks; "
                f"{torch.get_num_threads()} thread(s))", ["mixer"] + [f"N={c}" for c in contexts], rows)
    targets = {f"{m}: step @{hi} / @{lo} <= 1.5": results[m]["step_ms"][hi] / results[m]["step_ms"][lo]
               for m in mixers if m != "attention"}
    results["targets"] = {k: dict(value=v, met=bool(v <= 1.5)) for k, v in targets.items()}
    print_table("targets", ["target", "value", "met"],
                [[k, v, "yes" if v <= 1.5 else "NO"] for k, v in targets.items()])
    results["env"] = _env_info()
    Path(out).write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {out}")
    return results


def add_parser(sub, fmt) -> None:
    """``rl-seq bench ...``'s arguments, under the CLI's subcommands ``sub``."""
    b = sub.add_parser("bench", help="speed benchmarks (print a table, write JSON)", epilog=EXAMPLES,
                       formatter_class=fmt)
    bsub = b.add_subparsers(dest="what", required=True)
    bk = bsub.add_parser("kernels", help="mixer throughput, per-step latency and state size")
    bk.add_argument("--json", default="bench_kernels.json", help="where to write the results")
    bk.add_argument("--histories", type=int, nargs="+", default=[20, 100, 1000, 10000])
    bk.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    bs = bsub.add_parser("sampler", help="segment sampler batches/s")
    bs.add_argument("--dataset", default="rl_seq/pointgoal/medium-v0")
    bs.add_argument("--json", default="bench_sampler.json")
    bt = bsub.add_parser("train", help="training step time and acting ms/step per algorithm")
    bt.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    bt.add_argument("--json", default="bench_train.json")
    bt.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    bt.add_argument("--algos", nargs="+", help="offline algorithms to time (default: all)")
    bt.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                    help="the agents' torch.compile setting (auto: on CUDA only)")
    bi = bsub.add_parser("in-context", help="ad acting ms/step against the in-context history's length, per mixer")
    bi.add_argument("--contexts", type=int, nargs="+", default=[100, 500, 1000, 4000])
    bi.add_argument("--json", default="bench_in_context.json")
    bi.add_argument("--quick", action="store_true", help="short contexts, for a smoke test")
    bp = bsub.add_parser("ppo", help="recurrent PPO env steps/s against sb3-contrib's RecurrentPPO")
    bp.add_argument("--env", default="CartPole-v1")
    bp.add_argument("--steps", type=int, default=8192)
    bp.add_argument("--threads", type=int, default=1)
    bp.add_argument("--json", default="bench_ppo.json")
    b3 = bsub.add_parser("sb3", help="RecurrentPPO: stock LSTM policy vs rl_seq memories at equal hidden size")
    b3.add_argument("--env", default="CartPole-v1")
    b3.add_argument("--steps", type=int, default=4096)
    b3.add_argument("--hidden", type=int, default=64)
    b3.add_argument("--threads", type=int, default=1)
    b3.add_argument("--json", default="bench_sb3.json")


def run(a) -> int:
    """Run the benchmark ``rl-seq bench`` was asked for."""
    if a.what == "kernels":
        bench_kernels(a.json, histories=a.histories, quick=a.quick)
    elif a.what == "sampler":
        bench_sampler(a.dataset, a.json)
    elif a.what == "train":
        bench_train(a.json, threads=a.threads, quick=a.quick, algos=a.algos, compile=a.compile)
    elif a.what == "in-context":
        bench_in_context(a.json, contexts=a.contexts, quick=a.quick)
    elif a.what == "ppo":
        bench_ppo(a.json, env_id=a.env, steps=a.steps, threads=a.threads)
    else:
        bench_sb3(a.json, env_id=a.env, steps=a.steps, hidden=a.hidden, threads=a.threads)
    return 0
