"""The D4RL-style datasets in ../shared/datasets load (skipped where they are absent)."""

from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
IDS = [f"{env}/{lvl}-v0" for env in ("hopper", "halfcheetah") for lvl in ("medium", "medium-replay", "expert")]


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/datasets is not beside the checkout")
@pytest.mark.parametrize("ds", IDS)
def test_shared_dataset_loads(ds, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(SHARED))
    from rl_seq.data import SegmentSampler, load_episodes

    ep = load_episodes(ds)
    assert ep.num_steps >= 99_000 and ep.ref_min_score < ep.ref_max_score
    assert ep.env_id in ("Hopper-v5", "HalfCheetah-v5")
    assert np.isfinite(ep.observations).all()
    b = SegmentSampler(ep, 20).sample(64)
    assert b["obs"].shape == (64, 20, ep.observation_space.shape[0])
