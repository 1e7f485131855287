"""Run folders, metrics, atomic checkpoints, seeding and progress.

A run folder holds::

    config.yaml        the resolved config (algo, data/env, every field)
    metrics.jsonl      one JSON object per logged point: {"step", "kind": train|eval, ...}
    metrics.csv        the same points flattened to CSV, rewritten at the end
    checkpoints/last.pt  the resumable checkpoint (weights, optimiser, RNGs, step)
    model/             the final agent (config.yaml + model.safetensors + meta.json)
    eval.json          the final evaluation (last and best)
    plot.png           learning curves

Checkpoints are written to a temporary file in the same folder, flushed, fsynced and
renamed over the old one, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import pickle
import random
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt or truncated."""


class RunLockedError(RuntimeError):
    """Another process is writing to the run folder."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk, a signal: the old file stays intact, no temp file left
        tmp.unlink(missing_ok=True)
        raise


def save_checkpoint(path: Path, payload: dict) -> None:
    """torch.save ``payload`` (tensors and plain Python values only) atomically."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint with ``weights_only=True``; corrupt or truncated files raise
    :class:`CheckpointError` saying what to do."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}; start without --resume")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, pickle.UnpicklingError) as e:
        # (never retry with weights_only=False: that would run code from the file)
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({type(e).__name__}: {e}); delete it "
            "to start over, or restore it from a backup") from None


def rng_state() -> dict:
    return dict(torch=torch.get_rng_state(), numpy=np.random.get_state()[1].tolist(),
                numpy_pos=int(np.random.get_state()[2]), python=list(random.getstate()[1]))


def set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    np.random.set_state(("MT19937", np.array(s["numpy"], dtype=np.uint32), s["numpy_pos"], 0, 0.0))
    random.setstate((3, tuple(s["python"]), None))


class Run:
    """A run folder: metrics, checkpoints, progress and optional wandb."""

    def __init__(self, out_dir: str | Path, config: dict, resume: bool = False,
                 wandb: bool = False, wandb_project: str = "rl_seq", tensorboard: bool = False) -> None:
        writer = _tensorboard() if tensorboard else None  # before anything is written
        self.dir = Path(out_dir)
        self.ckpt_path = self.dir / "checkpoints" / "last.pt"
        if resume and not self.ckpt_path.exists():
            raise CheckpointError(f"--resume: {self.dir} holds no checkpoint ({self.ckpt_path} is missing); "
                                  "start the run without --resume, or name the folder of the run to continue")
        if self.dir.exists() and any(p.name != ".lock" for p in self.dir.iterdir()) and not resume:
            if self.ckpt_path.exists() or (self.dir / "model").exists():
                raise FileExistsError(
                    f"run folder {self.dir} already holds a run; pass --resume to continue it "
                    "or choose another --out")
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = _lock(self.dir / ".lock")
        cfg_path = self.dir / "config.yaml"
        if resume and cfg_path.exists():
            old = yaml.safe_load(cfg_path.read_text())
            if _without_steps(old) != _without_steps(config):
                changed = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
                raise ValueError(f"--resume with a different config (changed: {changed}); "
                                 "resume with the same settings or start a new run")
        atomic_write_bytes(cfg_path, yaml.safe_dump(config, sort_keys=False).encode())
        self.metrics_path = self.dir / "metrics.jsonl"
        self.wandb = _init_wandb(config, self.dir, wandb_project) if wandb else None
        self.tb = None if writer is None else writer(str(self.dir / "tb"))
        self.t0 = time.time()

    # -- metrics ---------------------------------------------------------------------------
    def log(self, step: int, kind: str, values: dict[str, Any]) -> None:
        row = {"step": int(step), "kind": kind, "time": round(time.time() - self.t0, 3)}
        row.update({k: _plain(v) for k, v in values.items()})
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        scalars = {f"{kind}/{k}": v for k, v in row.items()
                   if k not in ("step", "kind") and isinstance(v, int | float) and not isinstance(v, bool)}
        if self.wandb is not None:
            self.wandb.log(scalars, step=int(step))
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, int(step))

    def metrics(self) -> list[dict]:
        return read_metrics(self.dir)

    def truncate_metrics(self, step: int) -> None:
        """On resume: drop points logged after the checkpoint's step."""
        rows = [r for r in self.metrics() if r["step"] <= step]
        atomic_write_bytes(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows).encode())

    def write_csv(self) -> None:
        rows = self.metrics()
        keys = list(dict.fromkeys(k for r in rows for k in r))
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
        atomic_write_bytes(self.dir / "metrics.csv", buf.getvalue().encode())

    def write_json(self, name: str, data: dict) -> None:
        atomic_write_bytes(self.dir / name, (json.dumps(data, indent=2) + "\n").encode())

    # -- checkpoints -------------------------------------------------------------------------
    def save_checkpoint(self, payload: dict) -> None:
        save_checkpoint(self.ckpt_path, payload)

    def load_checkpoint(self) -> dict:
        return load_checkpoint(self.ckpt_path)

    def close(self) -> None:
        self.write_csv()
        if self.wandb is not None:
            self.wandb.finish()
        if self.tb is not None:
            self.tb.close()
        if self._lock is not None:  # releases the lock (as the process's exit would, even a kill)
            _HELD.pop(str(self._lock.name), None)
            self._lock.close()
            self._lock = None


_HELD: dict[str, Any] = {}  # run-folder locks this process holds (a process may reopen its own runs)


def _lock(path: Path):
    """Hold an exclusive lock on ``path`` for this process (the OS drops it when the process
    ends, however it ends); a writer in another process is refused with the first one's PID."""
    import fcntl

    if str(path) in _HELD:
        return _HELD[str(path)]
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise RunLockedError(f"run folder {path.parent} is in use by {holder}; wait for that run to end "
                             "or choose another --out") from None
    f.seek(0)
    f.truncate()
    f.write(f"process {os.getpid()} (since {time.strftime('%Y-%m-%d %H:%M:%S')})")
    f.flush()
    _HELD[str(path)] = f
    return f


def _without_steps(config: dict) -> dict:
    """A resumed run may extend its budget; every other setting must match."""
    inner = {k: v for k, v in (config.get("config") or {}).items() if k != "steps"}
    return {**config, "config": inner}


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value) over seeds: the
    convention of every table rl_seq writes (within one evaluation, ``std_return`` over its
    episodes is the population std, as SB3's ``evaluate_policy``)."""
    x = np.asarray(list(values), dtype=np.float64)
    return float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else 0.0


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a crash
            continue
    return rows


def _plain(v):
    if isinstance(v, torch.Tensor | np.ndarray | np.generic):
        v = np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v)
        v = v.item() if v.size == 1 else v.tolist()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def _init_wandb(config: dict, run_dir: Path, project: str):
    try:
        import wandb
    except ImportError:
        log.warning("wandb requested but not installed (pip install 'rl-seq[wandb]'); "
                    "logging to the run folder only")
        return None
    mode = os.environ.get("WANDB_MODE", "offline")
    return wandb.init(project=project, config=config, dir=str(run_dir), mode=mode,
                      reinit=True)


def _tensorboard() -> type:
    """TensorBoard's ``SummaryWriter`` (what Stable-Baselines3 users read their runs with)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ImportError("tensorboard=true needs the tensorboard package: pip install 'rl-seq[tensorboard]' "
                          "(or drop --set tensorboard=true)") from None
    return SummaryWriter


def progress(total: int, description: str, start: int = 0, disable: bool = False):
    """A rich progress bar with steps/s, ETA and a free-text metrics field (``disable``: shows
    nothing, e.g. on DDP ranks > 0)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class Speed(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed or 0:.1f} steps/s")

    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   Speed(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                   TextColumn("{task.fields[info]}"), transient=False, disable=disable)
    return bar, bar.add_task(description, total=total, completed=start, info="")


class stop_on_interrupt:
    """Turn Ctrl-C (SIGINT) and SIGTERM (what schedulers and ``docker stop`` send) into a
    flag the loop checks between steps, so the checkpoint it writes is never taken in the
    middle of an optimiser step. A second signal stops at once."""

    SIGNALS = ("SIGINT", "SIGTERM")

    def __enter__(self):
        import signal
        import threading

        self.requested = False
        self._old = {}
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                sig = getattr(signal, name)
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, *_):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        import signal

        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False
