"""Configs: one dataclass per algorithm, YAML presets, ``key=value`` overrides.

Every field has a type, a default and a docstring. ``load_config(cls, path, overrides)``
starts from the defaults, applies a YAML file, then ``a.b=c`` overrides (values parsed as
YAML). An unknown or mistyped key is an error that lists the valid keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import yaml


class ConfigError(ValueError):
    """An unknown key, a wrong type or an invalid value in a config."""


EVAL_SEED = 10_000
"""The env seed of the first evaluation episode (``rl-seq eval --seed``, ``Agent.evaluate``);
training-time evaluations of a run seeded s start at :func:`eval_seed` (s)."""


def eval_seed(seed: int) -> int:
    """Seed of the first evaluation episode for a run seeded ``seed`` (fixed per run, apart
    from the training seeds)."""
    return EVAL_SEED + 100 * seed


def check_range(cfg: Any, name: str, lo: float | None = None, hi: float | None = None, *,
                lo_open: bool = False, hi_open: bool = False) -> None:
    """Refuse field ``name`` of ``cfg`` outside [lo, hi] (open ends as asked; None: unbounded;
    a None value is an unset optional field and passes)."""
    v = getattr(cfg, name)
    if v is None:
        return
    low = lo is None or (v > lo if lo_open else v >= lo)
    high = hi is None or (v < hi if hi_open else v <= hi)
    if not (low and high):
        if hi is None:
            want = f"> {lo}" if lo_open else f">= {lo}"
        elif lo is None:
            want = f"< {hi}" if hi_open else f"<= {hi}"
        else:
            want = f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        raise ConfigError(f"{name} must be {want}, got {v}")


def check_choice(cfg: Any, name: str, choices: tuple[str, ...]) -> None:
    """Refuse field ``name`` of ``cfg`` outside ``choices``."""
    v = getattr(cfg, name)
    if v not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {v!r}")


@dataclass
class TrainConfig:
    """Fields every algorithm shares: budget, seeding, logging, evaluation, checkpoints."""

    legacy_defaults: ClassVar[dict[str, Any]] = {}
    """Fields added after a release, each with the value that rebuilds agents saved before it
    (a saved config without the field loads with it)."""

    steps: int = 10_000
    """Gradient steps (offline) or environment steps (online)."""
    seed: int = 0
    """Seeds torch, numpy, the sampler and the evaluation envs."""
    eval_every: int = 2_000
    """Evaluate every this many steps (0 = only at the end)."""
    eval_episodes: int = 10
    """Episodes per evaluation (run in parallel in a vector env)."""
    log_every: int = 100
    """Log training metrics every this many steps."""
    checkpoint_every: int = 1_000
    """Write the resumable checkpoint every this many steps."""
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu`` or ``cuda``."""
    threads: int = 0
    """torch CPU threads (0 = torch's default)."""
    amp: str = "auto"
    """Mixed precision of the training forward: ``bf16`` (autocast; losses and the backward's
    accumulation stay float32), ``off``, or ``auto``: bf16 where the device computes it natively
    (CUDA; a CPU with AVX512-BF16 or AMX), float32 elsewhere. Acting is always float32."""
    compile: str = "auto"
    """``torch.compile`` the training forward: ``on``, ``off``, or ``auto`` (on CUDA only)."""
    wandb: bool = False
    """Log to Weights & Biases too (offline unless WANDB_MODE says otherwise)."""
    wandb_project: str = "rl_seq"
    """wandb project name."""
    tensorboard: bool = False
    """Write TensorBoard event files to the run folder's ``tb/`` too (needs the ``tensorboard``
    package: ``pip install 'rl-seq[tensorboard]'``)."""

    def __post_init__(self) -> None:
        check_range(self, "steps", 1)
        check_range(self, "seed", 0)
        for name in ("eval_every", "eval_episodes", "checkpoint_every", "threads"):
            check_range(self, name, 0)
        check_range(self, "log_every", 1)
        check_choice(self, "device", ("auto", "cpu", "cuda"))
        check_choice(self, "amp", ("auto", "bf16", "off"))
        check_choice(self, "compile", ("auto", "on", "off"))


@dataclass
class OfflineConfig(TrainConfig):
    """Fields every offline (dataset-trained) algorithm shares."""

    batch_size: int = 64
    """Windows per gradient step (per process: under torchrun the global batch is this x the
    number of processes)."""
    lr: float = 1e-4
    """AdamW learning rate."""
    weight_decay: float = 1e-4
    """AdamW weight decay (matrices only)."""
    max_timestep: int = 1000
    """Size of the timestep table; later steps reuse the last entry."""
    ref_min_score: float | None = None
    """Overrides the dataset's reference score for 0 (random)."""
    ref_max_score: float | None = None
    """Overrides the dataset's reference score for 1 (expert)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "batch_size", 1)
        check_range(self, "lr", 0, lo_open=True)
        check_range(self, "weight_decay", 0)
        check_range(self, "max_timestep", 1)
        lo, hi = self.ref_min_score, self.ref_max_score
        if lo is not None and hi is not None and not lo < hi:
            raise ConfigError(f"ref_min_score ({lo}) must be below ref_max_score ({hi})")


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args and (value is None or (isinstance(value, str) and value.lower() == "none")):
            return None  # `--set key=none` on an optional field; a str field keeps "none" (a mixer name)
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping of {tp.__name__} fields, got {value!r}")
        return build(tp, value, prefix=f"{key}.")
    if tp is float and isinstance(value, str):  # YAML reads "3e-4" as a string
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"{key} must be float, got {value!r}") from None
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value!r}")
        return float(value)
    if tp is str and isinstance(value, bool):  # YAML 1.1 reads off/on/no/yes as booleans: `--set amp=off`
        return "on" if value else "off"
    if tp in (int, str, bool):
        if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
            return value
        raise ConfigError(f"{key} must be {tp.__name__}, got {value!r}")
    base = origin or tp
    if base in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        (item,) = typing.get_args(tp)[:1] or (Any,)
        return [v if item is Any else _coerce(v, item, key) for v in value]
    if base is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return dict(value)
    return value


def _unknown(key: str, valid: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown key {key!r} for {where}{hint}; valid keys: {', '.join(valid)}")


def build(cls, values: dict, prefix: str = ""):
    """Instantiate config ``cls`` from a (possibly nested) dict, checking keys and types."""
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for k, v in values.items():
        if k not in names:
            raise _unknown(prefix + k, [prefix + n for n in names], cls.__name__)
        kwargs[k] = _coerce(v, hints[k], prefix + k)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        msg = str(e)
        if prefix and any(msg.startswith(n) for n in names):  # a nested field's check names it in full
            msg = prefix + msg
        raise ConfigError(msg) from None


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict:
    """``["a.b=1", "c=x"]`` -> ``{"a": {"b": 1}, "c": "x"}`` (values parsed as YAML)."""
    out: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. lr=3e-4)")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_layers(path: str | Path | None = None, overrides: list[str] | None = None,
                expected_algo: str | None = None) -> dict:
    """A YAML file's values <- ``key=value`` overrides, as one nested dict (not yet checked
    against a config class). A file's ``algo:`` key, when present, must be ``expected_algo``."""
    values: dict = {}
    if path is not None:
        if not Path(path).is_file():
            raise ConfigError(f"config file {path} does not exist; the shipped ones are configs/ALGO/TASK.yaml "
                              "(e.g. configs/dt/hopper.yaml)")
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {' '.join(str(e).split())}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a config file must be a mapping of keys to values")
        algo = data.pop("algo", None)
        if algo is not None and expected_algo is not None and algo != expected_algo:
            raise ConfigError(f"{path} is a config for {algo!r}, not {expected_algo!r}; "
                              f"train {algo} with it, or pick configs/{expected_algo}/...")
        values = data
    if overrides:
        values = merge(values, parse_overrides(overrides))
    return values


def load_config(cls, path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict | None = None, expected_algo: str | None = None):
    """Defaults <- ``base`` <- YAML file <- overrides; returns a checked ``cls``."""
    return build(cls, merge(merge(to_dict(cls()), base or {}), read_layers(path, overrides, expected_algo)))


def describe(cls) -> list[tuple[str, str, str]]:
    """(key, default, doc) for every field, nested ones dotted - for ``--help`` and errors."""
    import ast
    import inspect

    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body
        for a, b in zip(body, body[1:]):
            if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant):
                docs[a.target.id] = " ".join(str(b.value.value).split())
    rows = []
    hints = _hints(cls)
    default = cls()
    for f in dataclasses.fields(cls):
        val = getattr(default, f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            rows += [(f"{f.name}.{k}", d, doc) for k, d, doc in describe(hints[f.name])]
        else:
            rows.append((f.name, repr(val), docs.get(f.name, "")))
    return rows
