"""The library entry point for training: :func:`train`. The CLI, sweeps and scripts all call it.

It checks the request (algorithm, data or env, ``init``), builds the config (the named
system's preset <- a YAML file <- ``key=value`` overrides, with ``init``'s architecture),
names the run folder, relaunches itself under ``torchrun`` for ``nproc`` > 1, builds the
agent and trains it on the engine. Every check runs before the run folder is made, so a bad
request writes nothing.
"""

from __future__ import annotations

import difflib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym

from rl_seq.agents import PRESETS, DecisionAgent, algos_that, config_for, load_agent, make_agent
from rl_seq.config import to_dict


def run_dir(algo: str, source: str, seed: int) -> Path:
    """The default run folder: ``runs/ALGO-SOURCE-sSEED`` (``/`` in the source becomes ``_``)."""
    return Path(f"runs/{algo}-{source.replace('/', '_')}-s{seed}")


def check_env_id(env_id: str) -> None:
    """Refuse an env id Gymnasium does not know, naming the closest registered ids
    (``module:EnvId`` imports the module first, as ``gym.make`` does)."""
    name = env_id
    if ":" in env_id:
        module, name = env_id.split(":", 1)
        try:
            __import__(module)
        except ImportError as e:
            raise ValueError(f"env {env_id!r}: cannot import module {module!r} ({e}); install it, "
                             "or drop the 'module:' prefix") from None
    if name in gym.registry:
        return
    if name.startswith("popgym-"):  # popgym registers its ids when imported
        raise ValueError(f"unknown env id {env_id!r}: popgym ids need their module: --env popgym:{name} "
                         "(pip install 'rl-seq[popgym]')")
    close = difflib.get_close_matches(name, list(gym.registry), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ValueError(f"unknown env id {env_id!r}: {hint}see `rl-seq list` for the built-in envs "
                     "(popgym ids need their module: popgym:popgym-...)")


def train(algo: str, *, dataset: str | None = None, env: str | None = None, config: str | Path | None = None,
          overrides: list[str] | tuple[str, ...] = (), out: str | Path | None = None, resume: bool = False,
          init: str | Path | None = None, download: bool = False, nproc: int = 1, argv: list[str] | None = None,
          **fields: Any) -> dict:
    """Train algorithm ``algo`` and return the engine's result plus ``run``, ``model`` and
    ``source`` (the env or dataset it trained on).

    Offline algorithms read ``dataset`` (a Minari id; ``download`` fetches a remote one) and
    evaluate in its env, or in ``env`` when given; online algorithms train in ``env``.
    ``config`` is a YAML file, ``overrides`` are ``key=value`` strings (dotted for nested
    keys) and ``fields`` config fields; ``out`` is the run folder (default
    :func:`run_dir`), ``resume`` continues it. ``init`` (odt only) starts the online phase
    from a trained dt / dc / ds4 / lram run, keeping its architecture. ``nproc`` > 1 runs the
    same training data-parallel under torchrun (``argv``: the CLI arguments to relaunch with);
    it returns torchrun's ``returncode`` and the run folder, whose ``eval.json`` holds the
    evaluations.
    """
    online = _check_request(algo, dataset, env, init, nproc)
    offline_from = None
    if init is not None:  # odt from a trained run: its architecture, no offline phase
        offline_from = load_agent(init)
        if not isinstance(offline_from, DecisionAgent):
            raise ValueError(f"--init takes a return-conditioned run (dt, dc, ds4, lram), not {offline_from.algo}")
        dataset = dataset or offline_from.meta.get("dataset_id")
        if not dataset:
            raise ValueError(f"{init} does not name the dataset it was trained on: give --dataset ID (its best "
                             "trajectories start the replay buffer)")
        arch = {k: getattr(offline_from.config, k) for k in ("context", "segment", "max_timestep", "return_scale")}
        fields = {**dict(backbone=to_dict(offline_from.config.backbone), **arch), **fields}
    cfg = config_for(algo, config, list(overrides), **fields)
    out = Path(out) if out is not None else run_dir(algo, env if online else dataset, cfg.seed)

    if nproc > 1:
        return _torchrun(nproc, argv, out)
    if online:
        agent = make_agent(algo, env, config=cfg)
        result = agent.learn(env=env, out=out, resume=resume)
    else:
        episodes = PRESETS[algo][0].load_data(dataset, download=download)
        agent = make_agent(algo, dataset=episodes, config=cfg)
        options = {}
        if offline_from is not None:
            agent.init_from(offline_from)
            options["steps"] = 0
        result = agent.learn(dataset=episodes, env=env, out=out, resume=resume, **options)
    return dict(result, run=str(out), model=str(out / "model"), source=env if online else dataset)


def _check_request(algo: str, dataset: str | None, env: str | None, init, nproc: int) -> bool:
    """Refuse a request that cannot train, before anything is loaded; returns whether the
    algorithm trains online."""
    if algo not in PRESETS:
        config_for(algo)  # the helpful error
    online = PRESETS[algo][0].online
    if init is not None and algo != "odt":
        raise ValueError(f"init starts Online DT's online phase from a trained run: `rl-seq train odt --init {init} "
                         "--online-steps M`")
    if online:
        if dataset:
            raise ValueError(f"{algo} trains online in --env and reads no dataset; drop --dataset {dataset} "
                             f"(or train an offline algorithm on it: {algos_that('online', False)})")
        if not env:
            raise ValueError(f"{algo} trains online: give --env ENV_ID (e.g. rl_seq/TMaze-v0, CartPole-v1)")
    elif not dataset and init is None:
        raise ValueError(f"{algo} trains offline: give --dataset ID (see `rl-seq datasets list`)")
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    if nproc > 1 and not PRESETS[algo][0].data_parallel:
        raise ValueError(f"{algo} trains in one process; --nproc is for {algos_that('data_parallel')} (run many "
                         "runs at once with `rl-seq sweep`)")
    if env:
        check_env_id(env)
    return online


def _torchrun(nproc: int, argv: list[str] | None, out: Path) -> dict:
    """The same ``rl-seq train`` command under torchrun, ``nproc`` processes on this machine."""
    if "WORLD_SIZE" in os.environ:
        raise ValueError("already under torchrun: drop --nproc (torchrun's --nproc_per_node sets the processes)")
    if argv is None:
        raise ValueError("nproc > 1 relaunches the command line under torchrun: run `rl-seq train ... --nproc N` "
                         "or `torchrun --nproc_per_node N -m rl_seq train ...`")
    args = list(argv)
    if "--nproc" in args:
        i = args.index("--nproc")
        del args[i:i + 2]
    args = [x for x in args if not x.startswith("--nproc=")]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "rl_seq", *args]
    rc = subprocess.run(cmd).returncode
    return dict(last=None, best=None, run=str(out), model=str(out / "model"), returncode=rc)
