"""Transformer-XL attention: a memory of the M previous layer inputs and relative
positions (Dai et al. 2019), the mixer GTrXL gates (Parisotto et al. 2020).

Every token attends to itself and the M tokens before it (a sliding window over memory
and the current call), scored as ``(q + u)·k_j + (q + v)·W_r r_{i-j}`` with sinusoidal
``r``. Keys and values are recomputed from the stored inputs, as in Transformer-XL.
State: ``(mem [B,M,D], valid [B,M])``, detached.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rl_seq.kernels.base import Mixer, State, alive, left_pad, same_segment, trim_invalid


def sinusoid(n: int, dim: int, device=None) -> Tensor:
    """[n, dim] sinusoidal embedding of distances 0..n-1."""
    inv = 1.0 / (10000 ** (torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim))
    ang = torch.arange(n, device=device, dtype=torch.float32)[:, None] * inv[None]
    return torch.cat([ang.sin(), ang.cos()], -1)


class XLAttention(Mixer):
    """Args: d_model, n_heads; memory: M previous tokens kept (>= 1); backend."""

    name = "xl_attention"

    def __init__(self, d_model: int, n_heads: int = 4, *, memory: int = 64,
                 backend: str = "torch") -> None:
        super().__init__(d_model, n_heads, backend)
        if memory < 1:
            raise ValueError(f"memory must be >= 1, got {memory}")
        self.memory = memory
        self.q = nn.Linear(d_model, d_model, bias=False)
        self.kv = nn.Linear(d_model, 2 * d_model, bias=False)
        self.r = nn.Linear(d_model, d_model, bias=False)
        self.u = nn.Parameter(torch.zeros(n_heads, self.head_dim))
        self.v = nn.Parameter(torch.zeros(n_heads, self.head_dim))
        self.proj = nn.Linear(d_model, d_model)

    def init_state(self, batch_size: int, device=None) -> State:
        """The memory is allocated at its full size M, all slots invalid (a fixed shape)."""
        return (torch.zeros(batch_size, self.memory, self.d_model, device=device),
                torch.zeros(batch_size, self.memory, dtype=torch.bool, device=device))

    def state_bytes(self, batch_size: int = 1) -> int:
        return batch_size * self.memory * (self.d_model * 4 + 1)

    def _scores(self, x: Tensor, state: State, resets: Tensor):
        """Returns content queries, keys, values, the positional bias [B,H,T,L] and the
        mask [B,T,L] (True = may attend), and the next state."""
        B, T, D = x.shape
        H, Dh = self.n_heads, self.head_dim
        mem, valid0 = state
        drop = trim_invalid(valid0)  # skip never-written slots of the pre-allocated memory
        mem, valid0 = mem[:, drop:], valid0[:, drop:]
        L0 = mem.shape[1]
        h = torch.cat([mem, x], 1)  # [B, L, D]
        L = L0 + T
        q = self.q(x).view(B, T, H, Dh).transpose(1, 2)  # [B,H,T,Dh]
        k, v = self.kv(h).view(B, L, 2, H, Dh).permute(2, 0, 3, 1, 4)  # [B,H,L,Dh]
        dist = (torch.arange(T, device=x.device)[:, None] + L0) - torch.arange(L, device=x.device)
        rel = self.r(sinusoid(L, D, x.device).to(x.dtype)).view(L, H, Dh).transpose(0, 1)  # [H,L,Dh]
        pos = (q + self.v[None, :, None]) @ rel.transpose(-1, -2)  # [B,H,T,L] indexed by distance
        pos = pos.gather(-1, dist.clamp(0, L - 1).expand(B, H, T, L))
        mask = torch.cat([(valid0[:, None, :] & alive(resets)[:, :, None]).expand(B, T, L0),
                          same_segment(resets)], 2)
        mask = mask & (dist >= 0) & (dist <= self.memory)
        qc = q + self.u[None, :, None]
        keep = min(L, self.memory)
        valid = torch.cat([valid0 & alive(resets)[:, -1:], same_segment(resets)[:, -1, :]], 1)
        new_state = (left_pad(h[:, L - keep:].detach(), self.memory, 1), left_pad(valid[:, L - keep:], self.memory, 1))
        return qc, k, v, pos, mask, new_state

    def forward_fast(self, x: Tensor, state: State, resets: Tensor) -> tuple[Tensor, State]:
        B, T, D = x.shape
        qc, k, v, pos, mask, new_state = self._scores(x, state, resets)
        scale = 1.0 / math.sqrt(self.head_dim)
        bias = (pos * scale).masked_fill(~mask[:, None], float("-inf"))
        y = F.scaled_dot_product_attention(qc, k, v, attn_mask=bias, scale=scale)
        return self.proj(y.transpose(1, 2).reshape(B, T, D)), new_state

    def forward_reference(self, x: Tensor, state: State, resets: Tensor) -> tuple[Tensor, State]:
        B, T, D = x.shape
        qc, k, v, pos, mask, new_state = self._scores(x, state, resets)
        scores = (qc.float() @ k.float().transpose(-1, -2) + pos.float()) / math.sqrt(self.head_dim)
        scores = scores.masked_fill(~mask[:, None], float("-inf"))
        y = torch.softmax(scores, -1) @ v.float()
        return self.proj(y.to(x.dtype).transpose(1, 2).reshape(B, T, D)), new_state
