"""Heads that read backbone features: actions, per-dimension Q bins, value."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Normal


class TanhHead(nn.Module):
    """Deterministic continuous action: ``low + (tanh(W h) + 1)/2 · (high - low)``. [..., D] -> [..., d]"""

    def __init__(self, d_model: int, space: gym.spaces.Box) -> None:
        super().__init__()
        if not space.is_bounded("both"):
            raise ValueError(f"a tanh head needs a bounded action space, got {space}")
        self.net = nn.Linear(d_model, int(np.prod(space.shape)))
        self.register_buffer("low", torch.as_tensor(space.low, dtype=torch.float32).flatten())
        self.register_buffer("high", torch.as_tensor(space.high, dtype=torch.float32).flatten())

    def forward(self, h: Tensor) -> Tensor:
        return self.low + (torch.tanh(self.net(h)) + 1) * 0.5 * (self.high - self.low)


class GaussianHead(nn.Module):
    """Diagonal Gaussian with a state-independent log-std. [..., D] -> Normal over [..., d]"""

    def __init__(self, d_model: int, action_dim: int, log_std_init: float = 0.0) -> None:
        super().__init__()
        self.mean = nn.Linear(d_model, action_dim)
        self.log_std = nn.Parameter(torch.full((action_dim,), log_std_init))

    def forward(self, h: Tensor) -> Normal:
        mean = self.mean(h)
        return Normal(mean, self.log_std.clamp(-5, 2).exp().expand_as(mean))


class CategoricalHead(nn.Module):
    """Discrete action logits. [..., D] -> Categorical over n"""

    def __init__(self, d_model: int, n: int) -> None:
        super().__init__()
        self.net = nn.Linear(d_model, n)

    def forward(self, h: Tensor) -> Categorical:
        return Categorical(logits=self.net(h))


class QBinHead(nn.Module):
    """Q of every bin of one action dimension, squashed to [0, 1] (rewards are scaled so
    returns fit). [..., D] -> [..., n_bins]"""

    def __init__(self, d_model: int, n_bins: int) -> None:
        super().__init__()
        self.net = nn.Linear(d_model, n_bins)

    def forward(self, h: Tensor) -> Tensor:
        return torch.sigmoid(self.net(h))


class ValueHead(nn.Module):
    """State value. [..., D] -> [...]"""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.net = nn.Linear(d_model, 1)

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h).squeeze(-1)
