"""Test set-up: no downloads, a private Minari store, small thread count."""

import os
import tempfile

_store = tempfile.mkdtemp(prefix="rl_seq_minari_")
os.environ["MINARI_DATASETS_PATH"] = _store
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("WANDB_MODE", "disabled")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh, empty Minari store for one test."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    return tmp_path / "datasets"


def make_minari(dataset_id: str, episodes: list[dict], env="rl_seq/PointGoal-v0", **kw):
    """A tiny Minari dataset from explicit episodes (observations T+1, actions T, ...)."""
    import warnings

    import minari
    from minari.data_collector import EpisodeBuffer

    buffers = [EpisodeBuffer(id=i, observations=e["observations"], actions=e["actions"],
                             rewards=list(e["rewards"]), terminations=list(e["terminations"]),
                             truncations=list(e["truncations"])) for i, e in enumerate(episodes)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return minari.create_dataset_from_buffers(dataset_id, buffers, env=env, author="test", **kw)


def point_episode(T: int, dim: int = 2, seed: int = 0, reward=None) -> dict:
    rng = np.random.default_rng(seed)
    r = rng.normal(size=T).astype(np.float32) if reward is None else np.asarray(reward, np.float32)
    return dict(observations=rng.uniform(-1, 1, (T + 1, 2 * dim)).astype(np.float32),
                actions=rng.uniform(-1, 1, (T, dim)).astype(np.float32), rewards=r,
                terminations=np.zeros(T, bool), truncations=np.eye(1, T, T - 1, dtype=bool)[0])
