"""Training windows of length K, sampled with probability proportional to episode length
(as the Decision Transformer does: a uniform step of the whole dataset, then the window that
starts there), left-padded with a mask (True = real step) where the episode ends early."""

from __future__ import annotations

import logging

import numpy as np

from rl_seq.data.episodes import Episodes

log = logging.getLogger(__name__)


class SegmentSampler:
    """Args:
        episodes: the data.
        context: window length K.
        gamma: discount of the returns-to-go.
        seed: seeds the sampler's own generator (its state is checkpointed).
        short_episodes: what to do with episodes shorter than K: ``"pad"`` (keep them,
            padded and masked), ``"drop"`` or ``"error"``.
        extra: more per-step arrays [N, ...] to cut into windows alongside the fields.
        min_length: episodes shorter than this are "short" (default: ``context``); a model
            that sees K steps but trains on longer windows passes K.
    """

    def __init__(self, episodes: Episodes, context: int, gamma: float = 1.0, seed: int = 0,
                 short_episodes: str = "pad", extra: dict[str, np.ndarray] | None = None,
                 min_length: int | None = None) -> None:
        if context < 1:
            raise ValueError(f"context must be >= 1, got {context}")
        K = min_length or context
        short = episodes.lengths < K
        if short.all():
            raise ValueError(
                f"every episode of {episodes.dataset_id} is shorter than the context K={K} "
                f"(longest: {episodes.lengths.max()} steps); lower the context "
                f"(--set context={episodes.lengths.max()}) or use longer episodes")
        if short.any():
            if short_episodes == "error":
                raise ValueError(
                    f"{short.sum()} episode(s) of {episodes.dataset_id} are shorter than the "
                    f"context K={K} (shortest: {episodes.lengths.min()} steps); set "
                    "short_episodes='pad' to pad them, 'drop' to skip them, or lower the context")
            if short_episodes == "drop":
                keep_steps = np.repeat(~short, episodes.lengths)
                extra = {k: v[keep_steps] for k, v in (extra or {}).items()}
                episodes = episodes.select(~short)
            elif short_episodes != "pad":
                raise ValueError(f"short_episodes must be pad, drop or error, got {short_episodes!r}")
            log.info("%d episode(s) shorter than K=%d are %sed", short.sum(), K,
                     short_episodes.rstrip("e") if short_episodes == "drop" else "padd")
        self.episodes = episodes
        self.extra = dict(extra or {})
        self.context = context
        self.rng = np.random.default_rng(seed)
        self.rtg = episodes.returns_to_go(gamma)
        self.timesteps = episodes.timesteps
        self.episode_end = np.repeat(episodes.offsets[1:], episodes.lengths)  # [N]

    def sample(self, batch_size: int) -> dict[str, np.ndarray]:
        """Returns ``obs`` [B,K,...], ``act`` [B,K,...], ``rew``/``rtg`` [B,K] float32,
        ``timestep`` [B,K] int64, ``mask`` [B,K] bool (True = real), ``episode_start`` [B,K]
        bool, and each ``extra`` array. Padding sits on the left and holds zeros."""
        K = self.context
        start = self.rng.integers(0, self.episodes.num_steps, batch_size)
        length = np.minimum(self.episode_end[start] - start, K)  # [B]
        j = np.arange(K)[None]
        pad = (K - length)[:, None]
        mask = j >= pad
        idx = np.where(mask, start[:, None] + j - pad, 0)
        ep = self.episodes
        out = dict(obs=ep.observations[idx], act=ep.actions[idx], rew=ep.rewards[idx],
                   rtg=self.rtg[idx], timestep=self.timesteps[idx], mask=mask)
        out.update({k: v[idx] for k, v in self.extra.items()})
        for k in ("obs", "act", "rew", "rtg", "timestep", *self.extra):
            m = mask.reshape(mask.shape + (1,) * (out[k].ndim - 2))
            out[k] = np.where(m, out[k], out[k].dtype.type(0))  # keeps the dtype (bool extras stay bool)
        out["episode_start"] = mask & (out["timestep"] == 0)
        # the first real token of a window starts a fresh context even mid-episode
        out["episode_start"] |= mask & ~np.concatenate([np.zeros((batch_size, 1), bool), mask[:, :-1]], 1)
        return out

    def state_dict(self) -> dict:
        """The generator's state (checkpointed by the engine)."""
        return self.rng.bit_generator.state

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state
