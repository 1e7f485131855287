"""d3rlpy's offline algorithms on a local Minari dataset, for ``scripts/bench_peers.py``.

Runs in its own virtualenv (d3rlpy 2.8.1 pins gymnasium 1.0), never imports rl_seq, and prints
one JSON line on stdout (d3rlpy's logs go to stderr). Recipes (d3rlpy's D4RL reproduction
scripts, reproductions/offline/*.py):

- ``dt``: DecisionTransformer, context 20, 3 layers, 1 head, embed 128, dropout 0.1, AdamW lr
  1e-4 / wd 1e-4, clip 0.25, batch 64, reward scale 1e-3, standard observation scaling; the
  warm-up is an argument.
- ``tacr``: TACR, the same transformer actor (lr 1e-4, the same warm-up) with d3rlpy's critic.
- ``iql``: IQL, actor/critic lr 3e-4, batch 256, expectile 0.7, weight temperature 3, max weight
  100, returns scaled by 1000 / (max - min episode return), cosine actor schedule over the run.
- ``td3bc``: TD3+BC, lr 3e-4, batch 256, alpha 2.5, actor updated every 2 steps, target smoothing
  0.2 / 0.5, standard observation scaling.
- ``ddt`` (Discrete actions): DiscreteDecisionTransformer at the reference DT size of ``dt``
  above and of rl_seq's ``dt`` (context 20, 3 layers, 1 head, embed 128, batch 64; d3rlpy's
  default 6 layers x 8 heads at batch 128 costs 1.5 s a step on one core, 6x more) with d3rlpy's
  discrete optimisation defaults (Adam lr 6e-4, its token-based warm-up and cosine decay, GELU,
  global position encoding, dropout 0.1), standard observation scaling; acts greedily on the
  predicted logits (d3rlpy's default samples from them).
- ``dcql`` (Discrete actions): DiscreteCQL, alpha 4 (the CQL paper's Atari weight; d3rlpy's
  default 1 fell to 0.17 and 0.03 of the normalised score on BabyAI-GoToRedBallGrey mixed and
  medium at seed 0, against 0.53 and 0.29 with 4, mean of the last three of four evaluations in
  2000 steps; 10 was no better), 2x256 encoder, Adam lr 3e-4, batch 256, gamma 0.99, target network
  copied every ``steps / 20`` steps (d3rlpy's default 8000 would never copy within a short run;
  every steps / 4 did the same), standard observation scaling.

Observations: vectors as they are; a Dict of MiniGrid's ``image`` (7x7x3) and ``direction``
becomes one vector, the image's 147 indices then the direction one-hot (d3rlpy's pixel encoder
is a Nature CNN whose 8x8 stride-4 first layer does not fit a 7x7 view). A dataset of
``rl_seq/MiniGrid-v0`` is evaluated on its level made by ``minigrid`` itself (the same reset
seeds give the same layouts), so rl_seq is never imported here.

Evaluation: ``episodes`` episodes with env seeds ``eval_seed, eval_seed+1, ...``, deterministic
(the transformers through d3rlpy's stateful wrapper at ``--target-return``: window recompute), at
the end and every ``--eval-every`` steps (each also appended to ``--evals-file``, so a stopped
job leaves what it measured).

    python scripts/peers/d3rlpy_offline.py dt hopper/medium-v0 --steps 5000 --warmup 1000 --seed 0 \\
        --eval-seed 10000 --episodes 10 --target-return 3600 [--device cuda:0]
"""

import argparse
import contextlib
import json
import sys
import time

DISCRETE = ("ddt", "dcql")


def flat(obs, np):
    """One observation, or a stack of them, as float32 vectors (module docstring)."""
    if not isinstance(obs, dict):
        return np.asarray(obs, np.float32)
    image, direction = np.asarray(obs["image"]), np.asarray(obs["direction"])
    lead = direction.shape
    return np.concatenate([image.reshape(*lead, -1).astype(np.float32),
                           np.eye(4, dtype=np.float32)[direction]], axis=-1)


def eval_env(mds, gym):
    """The dataset's evaluation env; ``rl_seq/MiniGrid-v0`` as its level straight from minigrid."""
    spec = mds.spec.env_spec
    if spec is not None and spec.id == "rl_seq/MiniGrid-v0":
        import minigrid  # noqa: F401  (registers the levels)

        return gym.make(spec.kwargs["level"])
    return mds.recover_environment(eval_env=True)


def to_mdp(mds, np, d3rlpy, discrete: bool):
    """Minari episodes -> d3rlpy MDPDataset (one terminal or timeout flag on each last step)."""
    cols = {k: [] for k in ("observations", "actions", "rewards", "terminals", "timeouts")}
    for ep in mds.iterate_episodes():
        T = len(ep.actions)
        obs = ep.observations
        cols["observations"].append(flat({k: v[:T] for k, v in obs.items()} if isinstance(obs, dict) else obs[:T], np))
        cols["actions"].append(np.asarray(ep.actions, np.int64).reshape(T) if discrete
                               else np.asarray(ep.actions, np.float32).reshape(T, -1))
        cols["rewards"].append(np.asarray(ep.rewards, np.float32).reshape(T))
        term, tout = np.zeros(T, np.float32), np.zeros(T, np.float32)
        if bool(ep.terminations[-1]):
            term[-1] = 1.0
        else:
            tout[-1] = 1.0
        cols["terminals"].append(term)
        cols["timeouts"].append(tout)
    space = d3rlpy.ActionSpace.DISCRETE if discrete else d3rlpy.ActionSpace.CONTINUOUS
    return d3rlpy.dataset.MDPDataset(**{k: np.concatenate(v) for k, v in cols.items()}, action_space=space)


def make_algo(a, d3rlpy):
    """The d3rlpy config of ``a.algo`` (module docstring)."""
    std = d3rlpy.preprocessing.StandardObservationScaler()
    if a.algo == "ddt":
        if a.target_return is None:
            raise SystemExit("ddt needs --target-return")
        return d3rlpy.algos.DiscreteDecisionTransformerConfig(
            context_size=20, num_layers=3, num_heads=1, batch_size=64, max_timestep=1000, observation_scaler=std,
            encoder_factory=d3rlpy.models.VectorEncoderFactory([128], exclude_last_activation=True))
    if a.algo == "dcql":
        return d3rlpy.algos.DiscreteCQLConfig(
            learning_rate=3e-4, batch_size=256, gamma=0.99, alpha=4.0, target_update_interval=max(1, a.steps // 20),
            encoder_factory=d3rlpy.models.VectorEncoderFactory([256, 256]), observation_scaler=std)
    if a.algo in ("dt", "tacr"):
        if a.target_return is None:
            raise SystemExit(f"{a.algo} needs --target-return")
        common = dict(batch_size=64, context_size=20, num_heads=1, num_layers=3, max_timestep=1000,
                      encoder_factory=d3rlpy.models.VectorEncoderFactory([128], exclude_last_activation=True),
                      observation_scaler=std, reward_scaler=d3rlpy.preprocessing.MultiplyRewardScaler(0.001),
                      position_encoding_type=d3rlpy.PositionEncodingType.SIMPLE)
        optim = d3rlpy.optimizers.AdamWFactory(
            weight_decay=1e-4, clip_grad_norm=0.25,
            lr_scheduler_factory=d3rlpy.optimizers.WarmupSchedulerFactory(warmup_steps=a.warmup))
        if a.algo == "dt":
            return d3rlpy.algos.DecisionTransformerConfig(learning_rate=1e-4, attn_dropout=0.1, resid_dropout=0.1,
                                                          embed_dropout=0.1, optim_factory=optim, **common)
        common["actor_encoder_factory"] = common.pop("encoder_factory")
        return d3rlpy.algos.TACRConfig(actor_learning_rate=1e-4, actor_optim_factory=optim, **common)
    if a.algo == "iql":
        return d3rlpy.algos.IQLConfig(
            actor_learning_rate=3e-4, critic_learning_rate=3e-4, batch_size=256, weight_temp=3.0, max_weight=100.0,
            expectile=0.7, reward_scaler=d3rlpy.preprocessing.ReturnBasedRewardScaler(multiplier=1000.0),
            actor_optim_factory=d3rlpy.optimizers.AdamFactory(
                lr_scheduler_factory=d3rlpy.optimizers.CosineAnnealingLRFactory(T_max=a.steps)))
    return d3rlpy.algos.TD3PlusBCConfig(
        actor_learning_rate=3e-4, critic_learning_rate=3e-4, batch_size=256, target_smoothing_sigma=0.2,
        target_smoothing_clip=0.5, alpha=2.5, update_actor_interval=2, observation_scaler=std)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("algo", choices=["dt", "tacr", "iql", "td3bc", *DISCRETE])
    p.add_argument("dataset")
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--warmup", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-seed", type=int, default=10_000)
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--target-return", type=float, default=None, help="dt and tacr: the return they condition on")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu or cuda:N")
    p.add_argument("--eval-every", type=int, default=0, help="also evaluate every this many steps (0: at the end)")
    p.add_argument("--evals-file", default=None, help="append each evaluation to this JSONL file")
    a = p.parse_args()

    out = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):
        import d3rlpy
        import gymnasium as gym
        import minari
        import numpy as np
        import structlog
        import torch

        structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
        torch.set_num_threads(a.threads)
        d3rlpy.seed(a.seed)
        mds = minari.load_dataset(a.dataset)
        data = to_mdp(mds, np, d3rlpy, a.algo in DISCRETE)
        env = eval_env(mds, gym)
        algo = make_algo(a, d3rlpy).create(device=False if a.device == "cpu" else a.device)
        sequence = a.algo in ("dt", "tacr", "ddt")
        greedy = d3rlpy.algos.GreedyTransformerActionSampler() if a.algo == "ddt" else None

        def evaluate(step: int) -> dict:
            policy = algo.as_stateful_wrapper(a.target_return, greedy) if sequence else None
            returns, lengths, t1 = [], [], time.perf_counter()
            for i in range(a.episodes):
                if sequence:
                    policy.reset()
                obs, _ = env.reset(seed=a.eval_seed + i)
                reward, ret, n, done = 0.0, 0.0, 0, False
                while not done:
                    x = flat(obs, np) if isinstance(obs, dict) else np.asarray(obs, np.float32)
                    act = policy.predict(x, float(reward)) if sequence else algo.predict(x[None])[0]
                    obs, reward, term, trunc, _ = env.step(act)
                    ret, n, done = ret + float(reward), n + 1, term or trunc
                returns.append(ret)
                lengths.append(n)
            norm = [float(minari.get_normalized_score(mds, np.asarray(r))) for r in returns]
            res = dict(step=step, wall_s=time.perf_counter() - t0, returns=returns, lengths=lengths,
                       normalized_scores=norm, normalized_score=float(np.mean(norm)),
                       mean_return=float(np.mean(returns)),
                       act_ms_per_step=1e3 * (time.perf_counter() - t1) / max(sum(lengths), 1))
            if a.evals_file:
                with open(a.evals_file, "a") as f:
                    f.write(json.dumps(res) + "\n")
            return res

        evals, eval_s, t0 = [], [0.0], time.perf_counter()

        def periodic(_algo, epoch: int, step: int) -> None:
            if a.eval_every and step % a.eval_every == 0 and step < a.steps:
                t = time.perf_counter()
                evals.append(evaluate(step))
                eval_s[0] += time.perf_counter() - t

        algo.fit(data, n_steps=a.steps, n_steps_per_epoch=a.steps, show_progress=False,
                 logger_adapter=d3rlpy.logging.NoopAdapterFactory(), save_interval=10**9, callback=periodic)
        train_s = time.perf_counter() - t0 - eval_s[0]
        last = evaluate(a.steps)
        evals.append(last)
        best = max(evals, key=lambda e: e["mean_return"])
    print(json.dumps(dict(lib="d3rlpy", algo=a.algo, version=d3rlpy.__version__, dataset=a.dataset, seed=a.seed,
                          steps=a.steps, device=a.device, train_s=train_s, train_step_s=train_s / a.steps,
                          **{k: last[k] for k in ("returns", "lengths", "normalized_scores", "normalized_score",
                                                  "act_ms_per_step")},
                          best_normalized_score=best["normalized_score"], best_step=best["step"], evals=evals,
                          target_return=a.target_return)), file=out, flush=True)


if __name__ == "__main__":
    main()
