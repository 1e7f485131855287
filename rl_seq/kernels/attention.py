"""Causal multi-head softmax attention with a KV cache for acting.

State: ``(k [B,H,L,Dh], v [B,H,L,Dh], valid [B,L])`` - the cached keys/values of past
tokens (L = ``window - 1`` when a window is set; without one L grows by one per token). The mixer
itself carries no positions: the tokenizer's timestep embedding does that.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rl_seq.kernels.base import Mixer, State, alive, left_pad, same_segment, trim_invalid


class Attention(Mixer):
    """Causal softmax attention (``scaled_dot_product_attention``).

    Args:
        d_model: width D.
        n_heads: heads H (D % H == 0).
        window: a token sees itself and at most ``window - 1`` tokens before it
            (None = unlimited; the cache then grows with the history).
        dropout: dropout on the attention probabilities while training (the GPT-2 / Decision
            Transformer ``attn_pdrop``); both paths draw it, so they agree only in eval mode.
        backend: ``"reference"`` (explicit fp32 softmax) or ``"torch"`` (SDPA).
    """

    name = "attention"

    def __init__(self, d_model: int, n_heads: int = 1, *, window: int | None = None,
                 dropout: float = 0.0, backend: str = "torch") -> None:
        super().__init__(d_model, n_heads, backend)
        if window is not None and window < 1:
            raise ValueError(f"window must be >= 1 or None, got {window}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.window = window
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def init_state(self, batch_size: int, device=None) -> State:
        """With a window, the cache is allocated at its full size (``window - 1`` slots, all
        invalid), so states have a fixed shape; without one it starts empty and grows."""
        H, Dh = self.n_heads, self.head_dim
        L = 0 if self.window is None else self.window - 1
        k = torch.zeros(batch_size, H, L, Dh, device=device)
        return (k, k.clone(), torch.zeros(batch_size, L, dtype=torch.bool, device=device))

    def fresh_state(self, batch_size: int, device=None) -> State:
        """An empty cache (no slots): the same result as ``init_state``'s all-invalid one, with
        shapes that do not depend on the data (a training step compiles to one static graph)."""
        H, Dh = self.n_heads, self.head_dim
        k = torch.zeros(batch_size, H, 0, Dh, device=device)
        return (k, k.clone(), torch.zeros(batch_size, 0, dtype=torch.bool, device=device))

    def state_bytes(self, batch_size: int = 1, history: int = 0) -> int:
        L = history if self.window is None else min(history, self.window - 1)
        return batch_size * L * (2 * self.d_model * 4 + 1)

    # -- shared preparation -----------------------------------------------------------
    def _prepare(self, x: Tensor, state: State, resets: Tensor):
        B, T, D = x.shape
        H, Dh = self.n_heads, self.head_dim
        q, k, v = self.qkv(x).view(B, T, 3, H, Dh).permute(2, 0, 3, 1, 4)  # 3 x [B,H,T,Dh]
        k0, v0, valid0 = state
        full = k0.shape[2]
        drop = trim_invalid(valid0)  # skip never-written slots of a pre-allocated cache
        k0, v0, valid0 = k0[:, :, drop:], v0[:, :, drop:], valid0[:, drop:]
        L0 = k0.shape[2]
        keys = torch.cat([k0, k], 2)
        values = torch.cat([v0, v], 2)
        # mask [B, T, L0+T]: True = may attend
        old = valid0[:, None, :] & alive(resets)[:, :, None]
        new = same_segment(resets)
        mask = torch.cat([old.expand(B, T, L0), new], 2)
        if self.window is not None:
            qpos = torch.arange(T, device=x.device)[:, None] + L0
            kpos = torch.arange(L0 + T, device=x.device)[None, :]
            mask = mask & (qpos - kpos < self.window)
        # next state: the last (window-1) keys, valid if in the final token's episode
        keep = L0 + T if self.window is None else min(L0 + T, self.window - 1)
        valid = torch.cat([valid0 & alive(resets)[:, -1:], new[:, -1, :]], 1)
        start = L0 + T - keep
        state = (keys[:, :, start:], values[:, :, start:], valid[:, start:])
        if self.window is not None:  # keep the fixed size of the cache
            n = max(full, self.window - 1)
            state = (left_pad(state[0], n, 2), left_pad(state[1], n, 2), left_pad(state[2], n, 1))
        return q, keys, values, mask, state

    def forward_fast(self, x: Tensor, state: State, resets: Tensor) -> tuple[Tensor, State]:
        B, T, D = x.shape
        q, keys, values, mask, new_state = self._prepare(x, state, resets)
        p = self.dropout if self.training else 0.0
        plain = keys.shape[2] == T and (self.window is None or self.window >= T) and not resets[:, 1:].any()
        if plain:
            y = F.scaled_dot_product_attention(q, keys, values, is_causal=True, dropout_p=p)
        else:
            y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask[:, None], dropout_p=p)
        return self.proj(y.transpose(1, 2).reshape(B, T, D)), new_state

    def forward_reference(self, x: Tensor, state: State, resets: Tensor) -> tuple[Tensor, State]:
        B, T, D = x.shape
        q, keys, values, mask, new_state = self._prepare(x, state, resets)
        scores = (q.float() @ keys.float().transpose(-1, -2)) / math.sqrt(self.head_dim)
        scores = scores.masked_fill(~mask[:, None], float("-inf"))
        probs = F.dropout(torch.softmax(scores, -1), self.dropout, self.training)
        y = probs @ values.float()
        return self.proj(y.to(x.dtype).transpose(1, 2).reshape(B, T, D)), new_state
