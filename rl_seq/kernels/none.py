"""The empty mixer: no token sees any other, so a block is a residual MLP. It turns any
backbone into the memoryless baseline (``--backbone none``)."""

from __future__ import annotations

import torch
from torch import Tensor

from rl_seq.kernels.base import Mixer, State


class NoMixer(Mixer):
    name = "none"

    def __init__(self, d_model: int, n_heads: int = 1, *, backend: str = "torch") -> None:
        super().__init__(d_model, 1, backend)

    def init_state(self, batch_size: int, device=None) -> State:
        return (torch.zeros(batch_size, 0, device=device),)

    def forward_fast(self, x: Tensor, state: State, resets: Tensor) -> tuple[Tensor, State]:
        return torch.zeros_like(x), state

    forward_reference = forward_fast

    def _step(self, x: Tensor, state: State, reset: Tensor) -> tuple[Tensor, State]:
        return torch.zeros_like(x), state
