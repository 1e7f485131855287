"""What every offline value learner here shares: episodes followed by a step holding their
final observation, and n-step bootstrapped targets over a training window (termination ends
the return; truncation bootstraps from the final observation)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from rl_seq.data import Episodes


def with_final_steps(ep: Episodes) -> tuple[Episodes, np.ndarray, np.ndarray]:
    """Each episode followed by one step holding its final observation (zero action and
    reward), so windows can bootstrap from it. Returns the episodes, ``final`` [N+E] and
    ``terminal`` [N+E] (that final step ends a terminated episode)."""
    E = ep.num_episodes
    at = ep.offsets[1:]
    obs = np.insert(ep.observations, at, ep.final_observations, axis=0)
    act = np.insert(ep.actions, at, np.zeros_like(ep.actions[:E]), axis=0)
    rew = np.insert(ep.rewards, at, np.zeros(E, ep.rewards.dtype))
    offsets = ep.offsets + np.arange(E + 1)
    final = np.zeros(len(rew), bool)
    final[offsets[1:] - 1] = True
    terminal = np.zeros(len(rew), bool)
    terminal[offsets[1:] - 1] = ep.terminations[at - 1]
    zeros = np.zeros(len(rew), bool)
    aug = Episodes(obs, act, rew, zeros.copy(), zeros.copy(), offsets, ep.final_observations,
                   ep.observation_space, ep.action_space, ep.ref_min_score, ep.ref_max_score,
                   ep.env_id, ep.dataset_id, ep.env_kwargs, ep.composite_space)
    return aug, final, terminal


def n_step_targets(v: Tensor, rew: Tensor, final: Tensor, terminal: Tensor, valid: Tensor, gamma: float,
                   n: int, clip_to_window: bool = False) -> tuple[Tensor, Tensor]:
    """n-step bootstrapped returns over windows of :func:`with_final_steps` episodes.

    v: [B, L] the (target) value of each step's state; rew: [B, L] rewards; final: [B, L]
    the step holds an episode's final observation (no action); terminal: [B, L] that final
    step ends by termination; valid: [B, L] real (unpadded) steps. Returns
    ``y_t = Σ_{k<m} γ^k r_{t+k} + γ^m v_{t+m}`` with m = n, or fewer where the episode ends
    first (then ``v`` of its final step, or 0 after a termination) or, with
    ``clip_to_window``, where the window ends first (then ``v`` of its last step), [B, L], and
    ``trainable`` [B, L]: real, not final, and the lookahead fits in the window (clipped: at
    least one step of it), or reaches the episode's end.
    """
    final, terminal, valid = final.bool(), terminal.bool(), valid.bool()
    B, L = rew.shape
    pad = lambda x, fill: torch.cat([x, x.new_full((B, n + 1), fill)], 1)  # noqa: E731
    rew_p, final_p, term_p, v_p = pad(rew, 0.0), pad(final, False), pad(terminal, False), pad(v, 0.0)
    inside = pad(torch.ones_like(valid), False)
    last_p = torch.zeros_like(inside)
    last_p[:, L - 1] = True  # the window's last step
    G = torch.zeros_like(rew)
    boot = torch.zeros_like(rew)
    live = torch.ones_like(valid)
    ended = torch.zeros_like(valid)
    for k in range(n):
        if clip_to_window and k > 0:  # the lookahead reached the window's last step: bootstrap from it
            at_end = live & last_p[:, k:k + L]
            boot = boot + at_end * gamma**k * v_p[:, k:k + L]
            ended = ended | at_end
            live = live & ~at_end
        G = G + live * gamma**k * rew_p[:, k:k + L]
        nxt_final = final_p[:, k + 1:k + 1 + L]
        reach = live & nxt_final
        boot = boot + reach * gamma ** (k + 1) * (~term_p[:, k + 1:k + 1 + L]) * v_p[:, k + 1:k + 1 + L]
        ended = ended | reach
        live = live & ~nxt_final
    y = G + boot + live * gamma**n * v_p[:, n:n + L]
    return y, valid & ~final & (ended | inside[:, n:n + L])
