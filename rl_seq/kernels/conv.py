"""Causal depthwise convolution: the token mixer of Decision ConvFormer (Kim et al. 2024).

``y_t = bias + Σ_{j<k} w_j ⊙ x_{t-j}``, per channel, over the tokens of the current
episode only. State: the last k-1 inputs and whether each is still in the episode,
``(buf [B,k-1,D], valid [B,k-1])`` - a rolling buffer, constant size.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rl_seq.kernels.base import Mixer, State, segment_ids


class CausalConv(Mixer):
    """Args: d_model, n_heads (unused), kernel_size k (DC uses 6 over tokens), backend."""

    name = "conv"

    def __init__(self, d_model: int, n_heads: int = 1, *, kernel_size: int = 6,
                 backend: str = "torch") -> None:
        super().__init__(d_model, 1, backend)
        if kernel_size < 1:
            raise ValueError(f"kernel_size must be >= 1, got {kernel_size}")
        self.k = kernel_size
        self.weight = nn.Parameter(torch.randn(kernel_size, d_model) / kernel_size**0.5)
        self.bias = nn.Parameter(torch.zeros(d_model))

    def init_state(self, batch_size: int, device=None) -> State:
        return (torch.zeros(batch_size, self.k - 1, self.d_model, device=device),
                torch.zeros(batch_size, self.k - 1, dtype=torch.bool, device=device))

    def _extended(self, x: Tensor, state: State, resets: Tensor):
        """Buffer + inputs, with an episode id per position: buffered tokens belong to
        episode 0 (the incoming one) if valid, else to none (-1)."""
        buf, valid = state
        seg = segment_ids(resets)  # [B,T]
        seg_buf = torch.where(valid, torch.zeros_like(valid, dtype=torch.long), -1)
        return torch.cat([buf, x], 1), torch.cat([seg_buf, seg], 1), seg

    def forward_fast(self, x: Tensor, state: State, resets: Tensor) -> tuple[Tensor, State]:
        B, T, D = x.shape
        xx, sx, seg = self._extended(x, state, resets)
        y = self.bias.expand(B, T, D)
        for j in range(self.k):  # a loop over taps, not time
            lo = self.k - 1 - j
            same = (sx[:, lo:lo + T] == seg)[..., None]
            y = y + self.weight[j] * xx[:, lo:lo + T] * same
        return y, self._next_state(xx, sx, seg)

    def forward_reference(self, x: Tensor, state: State, resets: Tensor) -> tuple[Tensor, State]:
        B, T, D = x.shape
        xx, sx, seg = self._extended(x, state, resets)
        ys = []
        for t in range(T):
            acc = self.bias.expand(B, D).clone()
            for j in range(self.k):
                p = self.k - 1 + t - j
                acc = acc + self.weight[j] * xx[:, p] * (sx[:, p] == seg[:, t])[:, None]
            ys.append(acc)
        return torch.stack(ys, 1), self._next_state(xx, sx, seg)

    def _next_state(self, xx: Tensor, sx: Tensor, seg: Tensor) -> State:
        n = self.k - 1
        if n == 0:
            return (xx[:, :0], sx[:, :0] >= 0)
        return (xx[:, -n:], sx[:, -n:] == seg[:, -1:])
