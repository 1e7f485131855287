"""The ``rl-seq`` command: train, eval, datasets, bench, plot, list."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

EPILOGS = {
    "main": """examples:
  rl-seq train dt --dataset rl_seq/pointgoal/medium-v0 --steps 2000
  rl-seq eval runs/dt-rl_seq_pointgoal_medium-v0-s0 --episodes 20 --json
  rl-seq sweep dt --dataset rl_seq/pointgoal/medium-v0 --grid lr=1e-4,3e-4 --seeds 0 1
  rl-seq datasets list
  rl-seq bench kernels
  rl-seq plot runs/dt-* --out curves.png
  rl-seq list""",
    "train": """examples:
  rl-seq train dt --dataset rl_seq/pointgoal/medium-v0
  rl-seq train dt --dataset hopper/medium-v0 --config configs/dt/hopper.yaml --seed 1
  rl-seq train dc --dataset hopper/medium-v0 --set lr=3e-4 --set backbone.n_layers=4
  rl-seq train dt --dataset hopper/medium-v0 --backbone mlstm --set backbone.n_heads=4
  rl-seq train dt --dataset hopper/medium-v0 --out runs/dt-hopper --resume
  rl-seq train dt --dataset hopper/medium-v0 --nproc 2        # data-parallel (torchrun, DDP)
  torchrun --nproc_per_node 2 -m rl_seq train dt --dataset hopper/medium-v0   # the same, by hand
  rl-seq train relit --env rl_seq/TMaze-v0 --set env_kwargs.corridor_length=50 --steps 400000
  rl-seq train lstm --env CartPole-v1 --backbone none      # the memoryless baseline
  rl-seq train odt --dataset hopper/medium-v0 --steps 10000 --online-steps 20000   # Online DT
  rl-seq train odt --init runs/dt-hopper --online-steps 20000      # online phase of a trained dt run
  rl-seq train odt --dataset hopper/medium-v0 --backbone s4d       # Decision-S4 with its online phase
  rl-seq train odt --init runs/ds4-hopper --online-steps 20000     # online phase of a trained ds4 run

Every config key (--set key=value, dotted for nested keys), per algorithm family:
""",
    "sweep": """examples:
  rl-seq sweep dt --dataset hopper/medium-v0 --grid lr=1e-4,3e-4 --seeds 0 1 2 --steps 10000
  rl-seq sweep gtrxl --env rl_seq/TMaze-v0 --grid ent_coef=0.0,0.01 --seeds 0 1 --cpus-per-trial 1
  rl-seq sweep dt --dataset hopper/medium-v0 --grid context=10,20 --address ray://head:10001 --gpus-per-trial 1""",
    "eval": """examples:
  rl-seq eval runs/dt-hopper --episodes 10
  rl-seq eval runs/dt-hopper --target-return 3600 --json
  rl-seq eval runs/qt-halfcheetah --set decode=soft --set temperature=0.1   # acting settings only""",
    "datasets": """examples:
  rl-seq datasets list
  rl-seq datasets info hopper/medium-v0
  rl-seq datasets download D4RL/door/human-v2
  rl-seq datasets make Pendulum-v1 --name test/pendulum --expert-steps 60000
  rl-seq datasets minigrid BabyAI-GoToRedBallGrey-v0 --episodes 1000
  rl-seq datasets in-context dark-room --name rl_seq/darkroom/ad4-v0 --tasks 64 --episodes 400 --every 10 --runs 4
  rl-seq datasets in-context bandit --kind dpt --name rl_seq/bandit/dpt-v0 --steps 500 --workers 2
  rl-seq datasets in-context --env mymod:Corridor-v0 --sampler mymod:tasks --name me/corridor/ad-v0""",
    "plot": """examples:
  rl-seq plot runs/dt-hopper-s0 runs/dt-hopper-s1 --out dt.png""",
}


class CLIError(Exception):
    """A command-line usage error, printed as `error: ...` with exit code 2."""


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser("rl-seq", description="Sequence-model RL agents: train, evaluate, "
                                "make datasets, benchmark.", epilog=EPILOGS["main"], formatter_class=fmt)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = p.add_subparsers(dest="cmd", required=True)

    from rl_seq.agents import PRESETS, algos_that, config_for
    from rl_seq.config import EVAL_SEED, describe

    by_config: dict[type, list[str]] = {}  # the config keys, once per config class
    for name, (cls, _, _) in PRESETS.items():
        by_config.setdefault(cls.config_class, []).append(name)
    keys = "\n\n".join(f"[{' '.join(names)}]\n" + "\n".join(
        f"  {k:32s} {d:>10s}  {doc}" for k, d, doc in describe(type(config_for(names[0]))))
        for names in by_config.values())
    t = sub.add_parser("train", help="train an agent", epilog=EPILOGS["train"] + keys,
                       formatter_class=fmt, description=f"Train ALGO offline on a Minari dataset "
                       f"(--dataset; {algos_that('online', False)}; odt then fine-tunes online) or online in a "
                       f"Gymnasium env (--env; {algos_that('online')}), evaluating periodically.")
    t.add_argument("algo", help=f"one of {', '.join(PRESETS)}")
    t.add_argument("--dataset", help="offline algorithms: Minari dataset id (local, built-in, or --download)")
    t.add_argument("--env", help="online algorithms: the env to train in; offline ones: the env to "
                   "evaluate in (default: the dataset's)")
    t.add_argument("--backbone", help="swap the mixer (attention, conv, s4d, mlstm, ...)")
    t.add_argument("--config", help="YAML config file (see configs/)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable), e.g. --set lr=3e-4")
    t.add_argument("--steps", type=int, help="training steps (config: steps)")
    t.add_argument("--seed", type=int, help="seed for torch, numpy, sampler and envs (config: seed)")
    t.add_argument("--out", help="run folder (default runs/ALGO-DATASET-sSEED)")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint (written every checkpoint_every "
                   "steps, on Ctrl-C/SIGTERM and at the end). Restored: weights, optimiser and schedule, the "
                   "sampler, the torch/numpy/Python RNGs, the step, last/best evaluations and (online) the "
                   "normalisation statistics and (odt) the trajectory buffer and the temperature; offline "
                   "runs continue bit for bit. Not restored: env internals - online envs restart with a fresh "
                   "reset, so an episode in progress is lost. Metrics logged after the checkpoint are dropped")
    t.add_argument("--wandb", action="store_true", help="also log to wandb (offline by default)")
    t.add_argument("--download", action="store_true", help="download the dataset if not local")
    t.add_argument("--online-steps", type=int, metavar="M",
                   help="odt: env steps of the online phase after the offline one (config: online_steps)")
    t.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="offline algorithms: train data-parallel in N processes (starts torchrun; the global "
                   "batch is batch_size x N; gloo on CPU, NCCL on CUDA)")
    t.add_argument("--init", metavar="OFFLINE_RUN_DIR",
                   help="odt: start the online phase from this dt/dc/ds4/lram run (its architecture and weights; "
                   "no offline phase; the run reports the starting policy as 'before')")

    w = sub.add_parser("sweep", help="many runs (grid x seeds) through Ray Tune", epilog=EPILOGS["sweep"],
                       formatter_class=fmt, description="Train ALGO at every grid point and seed as an ordinary "
                       "run folder under --out, scheduled by Ray Tune (local Ray, or a cluster with --address), "
                       "then print mean ± sample std over seeds of the last and best evaluations. Running the same "
                       "sweep again skips finished trials and resumes stopped ones. Needs the dist extra.")
    w.add_argument("algo", help=f"one of {', '.join(PRESETS)}")
    w.add_argument("--dataset", help="offline algorithms: the dataset of every trial")
    w.add_argument("--env", help="online algorithms: the env (offline: the env to evaluate in)")
    w.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="a config key and its values (repeatable; trials are the cartesian product)")
    w.add_argument("--seeds", type=int, nargs="+", default=[0])
    w.add_argument("--steps", type=int, help="training steps of every trial")
    w.add_argument("--config", help="YAML config file for every trial")
    w.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a setting of every trial")
    w.add_argument("--out", help="sweep folder (default runs/sweep-ALGO-SOURCE)")
    w.add_argument("--address", help="a Ray cluster, e.g. ray://head:10001 or auto (default: Ray on this machine)")
    w.add_argument("--cpus-per-trial", type=float, default=1, help="CPUs per trial (its torch threads)")
    w.add_argument("--gpus-per-trial", type=float, default=0, help="GPUs per trial")

    e = sub.add_parser("eval", help="evaluate a trained run", epilog=EPILOGS["eval"], formatter_class=fmt)
    e.add_argument("run_dir", help="a run folder (or a saved agent folder)")
    e.add_argument("--env", help="env id (default: the training data's env)")
    e.add_argument("--episodes", type=int, default=10)
    e.add_argument("--seed", type=int, default=EVAL_SEED, help="seed of the first episode")
    e.add_argument("--target-return", type=float, help="return to condition on (return-conditioned agents)")
    e.add_argument("--acting", choices=["cached", "window"],
                   help="return-conditioned agents: step state (cached) or recompute the K-step window")
    e.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an acting setting of the trained agent (dt/dc/ds4/lram/odt: target_return, mode; "
                   "qt: decode, temperature, support)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--save", action="store_true", help="also write the result into RUN_DIR/eval.json (under "
                   "'eval'); without it evaluation writes nothing")

    d = sub.add_parser("datasets", help="list, inspect, download or make datasets",
                       epilog=EPILOGS["datasets"], formatter_class=fmt)
    dsub = d.add_subparsers(dest="action", required=True)
    dsub.add_parser("list", help="datasets in the local Minari store and built-in ones")
    di = dsub.add_parser("info", help="summary of one dataset")
    di.add_argument("dataset")
    dd = dsub.add_parser("download", help="download a dataset from the Minari remote")
    dd.add_argument("dataset")
    dm = dsub.add_parser("make", help="make D4RL-style levels for a Gymnasium env")
    dm.add_argument("env_id")
    dm.add_argument("--name", required=True, help="NAMESPACE/NAME; levels become NAMESPACE/NAME/LEVEL-v0")
    dm.add_argument("--levels", nargs="+", default=["random", "medium", "medium-replay", "expert"])
    dm.add_argument("--expert-steps", type=int, default=100_000, help="PPO training steps of the expert")
    dm.add_argument("--steps-per-level", type=int, default=20_000, help="transitions per level")
    dm.add_argument("--checkpoints", type=int, default=10, help="expert checkpoints to choose medium from")
    dm.add_argument("--medium-fraction", type=float, default=0.4,
                    help="medium = the checkpoint closest to this fraction from random to expert")
    dm.add_argument("--n-envs", type=int, default=4)
    dm.add_argument("--seed", type=int, default=0)
    dm.add_argument("--algo", choices=["ppo", "sac"], default="ppo", help="SB3 algorithm of the expert")
    dm.add_argument("--expert-kwargs", default="{}", help='JSON of SB3 constructor arguments, e.g. \'{"gamma": 0.9}\'')
    dm.add_argument("--expert-path", help="load this SB3 model as the expert instead of training one")

    mg = dsub.add_parser("minigrid", help="D4RL-style levels of a BabyAI level, made with its expert bot")
    mg.add_argument("level", help="a BabyAI level with one mission, e.g. BabyAI-GoToRedBallGrey-v0")
    mg.add_argument("--levels", nargs="+", default=["optimal", "medium", "mixed"],
                    help="optimal (the bot), medium (the bot with --medium-noise random actions), mixed (random "
                    "to bot), random")
    mg.add_argument("--episodes", type=int, default=1000, help="episodes per dataset level")
    mg.add_argument("--medium-noise", type=float, default=0.85, help="medium: share of uniformly random actions")
    mg.add_argument("--ref-episodes", type=int, default=100, help="episodes of the bot and of the random policy "
                    "behind ref_max_score / ref_min_score")
    mg.add_argument("--namespace", default="minigrid", help="datasets become NAMESPACE/LEVEL/KIND-v0")
    mg.add_argument("--seed", type=int, default=0)

    ic = dsub.add_parser("in-context", help="learning histories (ad) or labelled in-context datasets (dpt) over a "
                         "task family")
    ic.add_argument("family", nargs="?", help="bandit, dark-room or dark-key-to-door (or --env with --sampler)")
    ic.add_argument("--name", required=True, help="the dataset id to write, e.g. rl_seq/darkroom/ad-v0")
    ic.add_argument("--kind", choices=["ad", "dpt"], default="ad")
    ic.add_argument("--env", help="a task family of your own: its Gymnasium id (module:Id registers it)")
    ic.add_argument("--sampler", help="module:function(rng) -> gym.make keyword arguments of one task")
    ic.add_argument("--family-kwargs", default="{}", help='JSON for the task sampler, e.g. \'{"horizon": 100}\' '
                    "(bandit: arms, horizon; dark rooms: size)")
    ic.add_argument("--tasks", type=int, default=32, help="training tasks")
    ic.add_argument("--heldout", type=int, default=8, help="held-out tasks (disjoint from the training ones)")
    ic.add_argument("--episodes", type=int, default=200, help="ad: the source's episodes per task (dpt: the "
                    "source's, to label a family without optimal actions)")
    ic.add_argument("--every", type=int, default=1, help="ad: record one source episode in this many")
    ic.add_argument("--steps", type=int, default=100, help="dpt: transitions per task's in-context dataset")
    ic.add_argument("--runs", type=int, default=1, help="histories per training task (the source seeded anew)")
    ic.add_argument("--expert", action="store_true", help="ad: the learnt source's episodes, not its history "
                    "(the expert-distillation control)")
    ic.add_argument("--workers", type=int, default=1, help="processes making histories in parallel")
    ic.add_argument("--address", help="make them on Ray instead: auto, ray://HOST:PORT, or local (starts Ray here)")
    ic.add_argument("--seed", type=int, default=0)

    from rl_seq import bench

    bench.add_parser(sub, fmt)

    pl = sub.add_parser("plot", help="learning curves of run folders", epilog=EPILOGS["plot"],
                        formatter_class=fmt)
    pl.add_argument("run_dirs", nargs="+")
    pl.add_argument("--out", default="curves.png")

    sub.add_parser("list", help="algorithms, backbones, local datasets and built-in envs")
    return p


def cmd_train(a) -> int:
    import yaml

    from rl_seq.distributed import world
    from rl_seq.training import train

    result = train(a.algo, dataset=a.dataset, env=a.env, config=a.config, overrides=_overrides(a), out=a.out,
                   resume=a.resume, init=a.init, download=a.download, nproc=a.nproc, argv=a.argv)
    if "returncode" in result:  # relaunched under torchrun: its rank 0 reported
        return result["returncode"]
    if world()[0] > 0:  # DDP: rank 0 reports
        return 0
    if result["last"] is not None:
        _print_eval(result["last"], f"{a.algo} on {result['source']}", result["best"], result["data"],
                    {k: result.get(k) for k in ("before", "offline")})
    print(yaml.safe_dump({"run": result["run"], "model": result["model"]}, sort_keys=False).strip())
    return 0


def _overrides(a) -> list[str]:
    """--set plus the flags that are config keys."""
    overrides = list(a.set)
    for flag, key in ((a.steps, "steps"), (a.seed, "seed"), (a.backbone, "backbone.mixer"),
                      (getattr(a, "online_steps", None), "online_steps")):
        if flag is not None:
            overrides.append(f"{key}={flag}")
    if a.wandb:
        overrides.append("wandb=true")
    return overrides


def _print_eval(res: dict, title: str, best: dict | None = None, data: dict | None = None,
                milestones: dict | None = None) -> None:
    """A rich table of the ``last`` evaluation, then ``best``, the labelled ``milestones``
    (odt's ``before`` / ``offline``; None entries skipped) and the dataset's ``data`` row."""
    from rich.console import Console
    from rich.table import Table

    tab = Table(title=title)
    for c in ("", "mean return", "std", "normalised score (x100)", "episodes", "step"):
        tab.add_column(c)
    rows = [("last", res)] + ([("best", best)] if best else [])
    rows += [(k, r) for k, r in (milestones or {}).items() if r is not None]
    if data:
        rows.append(("data", data))
    for name, r in rows:
        ns = r.get("normalized_score")
        tab.add_row(name, f"{r['mean_return']:.2f}", f"{r['std_return']:.2f}",
                    "n/a (no reference scores)" if ns is None else f"{ns:.3f} ({100 * ns:.1f})",
                    str(r["episodes"]), str(r.get("step", "")))
    Console().print(tab)
    if "curve_mean" in res:  # in-context agents: the last row is the last in-context episode, per held-out task
        opt = [o for o in res.get("optimal_returns", []) if o]
        frac = f"; optimal {sum(opt) / len(opt):.3g}" if opt and len(opt) == len(res["curve"]) else ""
        print(f"return per in-context episode, mean over {len(res['curve'])} held-out tasks{frac}: "
              + " ".join(f"{x:.3g}" for x in res["curve_mean"]))
        if res.get("final_regret") is not None:
            print(f"cumulative regret at the end: {res['final_regret']:.3g}")


def cmd_sweep(a) -> int:
    from rl_seq.agents import PRESETS, config_for
    from rl_seq.sweep import Sweep, parse_grid, run_sweep, table

    if a.algo not in PRESETS:
        config_for(a.algo)  # the helpful error
    online = PRESETS[a.algo][0].online
    if online and (not a.env or a.dataset):
        raise CLIError(f"{a.algo} trains online: give --env ENV_ID and no --dataset")
    if not online and not a.dataset:
        raise CLIError(f"{a.algo} trains offline: give --dataset ID")
    source = (a.env if online else a.dataset).replace("/", "_")
    sweep = Sweep(a.algo, dataset=a.dataset, env=a.env, grid=parse_grid(a.grid), seeds=a.seeds, config=a.config,
                  overrides=[*a.set, *([f"steps={a.steps}"] if a.steps else [])],
                  out=a.out or f"runs/sweep-{a.algo}-{source}", cpus_per_trial=a.cpus_per_trial,
                  gpus_per_trial=a.gpus_per_trial, address=a.address)
    rows = run_sweep(sweep)
    print(table(sweep, rows))
    print(f"sweep folder: {sweep.out} (sweep.json, sweep.md, sweep.png; one run folder per trial)")
    return 0


def cmd_eval(a) -> int:
    from rl_seq.agents import load_agent
    from rl_seq.config import parse_overrides

    agent = load_agent(a.run_dir)
    acting = parse_overrides(a.set)  # acting settings only: the model and its config stay as trained
    for flag, key in ((a.acting, "mode"), (a.target_return, "target_return")):
        if flag is not None:
            acting[key] = flag
    kwargs = dict(episodes=a.episodes, seed=a.seed, acting=acting)
    res = agent.evaluate(a.env, **kwargs).to_dict()
    if a.save:  # beside the run's own evaluations, under "eval"
        from rl_seq.runs import atomic_write_bytes

        path = Path(a.run_dir) / "eval.json"
        report = json.loads(path.read_text()) if path.exists() else {}
        report["eval"] = res
        atomic_write_bytes(path, (json.dumps(report, indent=2) + "\n").encode())
    if a.json:
        print(json.dumps(res))
    else:
        _print_eval(res, f"{agent.algo} evaluation ({a.episodes} episodes)")
    return 0


def cmd_datasets(a) -> int:
    from rich.console import Console
    from rich.table import Table

    from rl_seq.data import BUILTIN, load_episodes, load_minari, local_datasets

    con = Console()
    if a.action == "list":
        tab = Table(title="datasets")
        for c in ("id", "where", "episodes", "steps"):
            tab.add_column(c)
        import minari

        for ds_id, meta in sorted(minari.list_local_datasets().items()):
            tab.add_row(ds_id, "local", str(meta.get("total_episodes", "")), str(meta.get("total_steps", "")))
        local = set(local_datasets())
        for ds_id in BUILTIN:
            if ds_id not in local:
                tab.add_row(ds_id, "built-in (made on first use)", "", "")
        con.print(tab)
    elif a.action == "info":
        s = load_episodes(a.dataset).summary()
        tab = Table(title=a.dataset)
        tab.add_column("field")
        tab.add_column("value")
        for k, v in s.items():
            tab.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
        con.print(tab)
    elif a.action == "download":
        load_minari(a.dataset, download=True)
        print(f"downloaded {a.dataset}")
    elif a.action == "make":
        from rl_seq.data.maker import make_datasets

        make_datasets(a.env_id, a.name, levels=a.levels, expert_steps=a.expert_steps,
                      steps_per_level=a.steps_per_level, checkpoints=a.checkpoints,
                      medium_fraction=a.medium_fraction, n_envs=a.n_envs, seed=a.seed, algo=a.algo,
                      expert_kwargs=json.loads(a.expert_kwargs), expert_path=a.expert_path)
    elif a.action == "minigrid":
        from rl_seq.data.minigrid import make_minigrid_datasets

        make_minigrid_datasets(a.level, levels=a.levels, episodes=a.episodes, medium_noise=a.medium_noise,
                               ref_episodes=a.ref_episodes, seed=a.seed, namespace=a.namespace)
    elif a.action == "in-context":
        from rl_seq.data.in_context import make_in_context

        if a.family is not None and (a.env or a.sampler):
            raise CLIError("give a task family or --env with --sampler, not both")
        s = make_in_context(a.name, a.kind, a.family, a.env, a.sampler, tasks=a.tasks, heldout=a.heldout,
                            episodes=a.episodes, every=a.every, steps=a.steps, runs=a.runs, seed=a.seed,
                            workers=a.workers, sampler_kwargs=_json_arg(a.family_kwargs, "--family-kwargs"),
                            expert=a.expert, address=a.address)
        from rl_seq.plot import print_table

        print_table(f"{a.kind} data for {s['env_id']}", list(s), [list(s.values())])
    return 0


def _json_arg(text: str, flag: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise CLIError(f"{flag} is not JSON ({e}): give an object such as '{{\"horizon\": 100}}'") from None
    if not isinstance(value, dict):
        raise CLIError(f"{flag} must be a JSON object, got {text}")
    return value


def cmd_bench(a) -> int:
    from rl_seq import bench

    return bench.run(a)


def cmd_plot(a) -> int:
    from rl_seq.plot import plot_runs

    print(plot_runs([Path(d) for d in a.run_dirs], Path(a.out)))
    return 0


def cmd_list(a) -> int:
    import gymnasium as gym
    from rich.console import Console
    from rich.table import Table

    from rl_seq.agents import PRESETS
    from rl_seq.data import BUILTIN, local_datasets
    from rl_seq.kernels import MIXERS

    con = Console()
    tab = Table(title="algorithms")
    tab.add_column("name")
    tab.add_column("default backbone")
    tab.add_column("description")
    for name, (_, preset, desc) in PRESETS.items():
        tab.add_row(name, preset.get("backbone", {}).get("mixer", ""), desc)
    con.print(tab)
    con.print(f"[bold]backbones (mixers):[/bold] {', '.join(MIXERS)}")
    local = local_datasets()
    con.print(f"[bold]local datasets:[/bold] {', '.join(local) or '(none)'}")
    con.print(f"[bold]built-in datasets:[/bold] {', '.join(d for d in BUILTIN if d not in local)}")
    con.print(f"[bold]built-in envs:[/bold] {', '.join(e for e in gym.registry if e.startswith('rl_seq/'))}")
    return 0


def main(argv: list[str] | None = None) -> int:
    import os

    args = _parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    quiet = int(os.environ.get("RANK", 0)) > 0  # DDP ranks > 0 log warnings only
    logging.basicConfig(level=logging.DEBUG if args.verbose else (logging.WARNING if quiet else logging.INFO),
                        format="%(levelname)s %(name)s: %(message)s")
    import gymnasium as gym

    import rl_seq  # noqa: F401  (registers envs)
    from rl_seq.config import ConfigError
    from rl_seq.data import DatasetNotFoundError
    from rl_seq.runs import CheckpointError, RunLockedError

    handlers = {"train": cmd_train, "sweep": cmd_sweep, "eval": cmd_eval, "datasets": cmd_datasets,
                "bench": cmd_bench, "plot": cmd_plot, "list": cmd_list}
    try:
        return handlers[args.cmd](args)
    except KeyboardInterrupt:
        print("interrupted (a training run saved its checkpoint: continue it with --resume)", file=sys.stderr)
        return 130
    except (CLIError, ConfigError, DatasetNotFoundError, CheckpointError, RunLockedError, FileExistsError,
            FileNotFoundError, NotADirectoryError, PermissionError, ValueError, TypeError, FloatingPointError,
            ImportError, gym.error.Error) as e:
        if args.debug:
            raise
        hint = " (see `rl-seq list` for the built-in envs)" if isinstance(e, gym.error.Error) else ""
        if "`popgym-" in str(e):  # popgym registers its ids on import: gymnasium's module:id form does it
            hint = "; popgym ids need their module: --env popgym:popgym-... (pip install 'rl-seq[popgym]')"
        print(f"error: {e}{hint}", file=sys.stderr)
        if not isinstance(e, CLIError | ConfigError):
            print("(run with --debug to see the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
