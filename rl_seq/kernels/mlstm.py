"""The mLSTM cell of xLSTM (Beck et al. 2024): a matrix memory with stabilised exponential
gating, per head:

    m_t = max(log f_t + m_{t-1}, ĩ_t)
    C_t = exp(log f_t + m_{t-1} - m_t) C_{t-1} + exp(ĩ_t - m_t) v_t k_tᵀ/√Dh
    n_t = exp(log f_t + m_{t-1} - m_t) n_{t-1} + exp(ĩ_t - m_t) k_t/√Dh
    h_t = o_t ⊙ Norm(C_t q_t / max(|n_t·q_t|, exp(-m_t)))

``forward`` is the parallel (quadratic) form with the same stabiliser, which equals the
recurrent m_t exactly; ``step`` is the recurrence.
State: ``(C [B,H,Dh,Dh], n [B,H,Dh], m [B,H])``, all zeros initially: with C = n = 0 the
output ``C q / max(|n·q|, 1)`` (unstabilised) does not depend on where m starts, so the
stabiliser starts (and restarts at a reset) at 0 and an all-zero state is a fresh one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rl_seq.kernels.base import Mixer, State, alive, positions_in_segment, same_segment

NEG = -1e30  # "minus infinity" for masked log-weights that keeps arithmetic finite


class MLSTM(Mixer):
    """Args: d_model, n_heads, backend."""

    name = "mlstm"

    def __init__(self, d_model: int, n_heads: int = 4, *, backend: str = "torch") -> None:
        super().__init__(d_model, n_heads, backend)
        H = n_heads
        self.qkvo = nn.Linear(d_model, 4 * d_model)
        self.gates = nn.Linear(d_model, 2 * H)  # input and forget pre-activations
        self._init_gates()
        self.norm = nn.LayerNorm(self.head_dim, elementwise_affine=False)
        self.scale = nn.Parameter(torch.ones(d_model))
        self.proj = nn.Linear(d_model, d_model)

    @torch.no_grad()
    def _init_gates(self) -> None:
        """Small gate weights; input gates start closed (-3), forget gates open (3..6)."""
        H = self.n_heads
        self.gates.weight.mul_(0.1)
        self.gates.bias[:H].fill_(-3.0)
        self.gates.bias[H:] = torch.linspace(3.0, 6.0, H)

    def gpt2_init_(self) -> None:
        super().gpt2_init_()
        self._init_gates()

    def init_state(self, batch_size: int, device=None) -> State:
        H, Dh = self.n_heads, self.head_dim
        return (torch.zeros(batch_size, H, Dh, Dh, device=device),
                torch.zeros(batch_size, H, Dh, device=device),
                torch.zeros(batch_size, H, device=device))

    def _project(self, x: Tensor):
        B, T, D = x.shape
        H, Dh = self.n_heads, self.head_dim
        q, k, v, o = self.qkvo(x).view(B, T, 4, H, Dh).permute(2, 0, 3, 1, 4)  # [B,H,T,Dh]
        i_pre, f_pre = self.gates(x).view(B, T, 2, H).permute(2, 0, 3, 1)  # [B,H,T]
        return q, k / math.sqrt(Dh), v, o, i_pre, F.logsigmoid(f_pre)

    def _output(self, h: Tensor, o: Tensor) -> Tensor:
        """h, o: [B,H,T,Dh] -> [B,T,D]"""
        B, H, T, Dh = h.shape
        y = (self.norm(h) * torch.sigmoid(o)).transpose(1, 2).reshape(B, T, H * Dh)
        return self.proj(y * self.scale)

    @staticmethod
    def _cell(q, k, v, i_pre, logf, C, n, m):
        """One recurrent step; all per head: q,k,v [B,H,Dh], i_pre/logf [B,H]."""
        m_new = torch.maximum(logf + m, i_pre)
        fp = torch.exp(logf + m - m_new)[..., None]
        ip = torch.exp(i_pre - m_new)[..., None]
        C = fp[..., None] * C + ip[..., None] * v[..., :, None] * k[..., None, :]
        n = fp * n + ip * k
        num = (C @ q[..., None])[..., 0]
        den = torch.maximum((n * q).sum(-1, keepdim=True).abs(), torch.exp(-m_new)[..., None])
        return num / den, C, n, m_new

    def forward_reference(self, x: Tensor, state: State, resets: Tensor) -> tuple[Tensor, State]:
        q, k, v, o, i_pre, logf = self._project(x)
        C, n, m = state
        hs = []
        for t in range(x.shape[1]):
            keep = ~resets[:, t]
            C, n, m = C * keep.view(-1, 1, 1, 1), n * keep.view(-1, 1, 1), m * keep.view(-1, 1)
            h, C, n, m = self._cell(q[:, :, t], k[:, :, t], v[:, :, t], i_pre[:, :, t],
                                    logf[:, :, t], C, n, m)
            hs.append(h)
        return self._output(torch.stack(hs, 2), o), (C, n, m)

    def _step(self, x: Tensor, state: State, reset: Tensor) -> tuple[Tensor, State]:
        y, state = self.forward_reference(x[:, None], state, reset[:, None])
        return y[:, 0], state

    def forward_fast(self, x: Tensor, state: State, resets: Tensor) -> tuple[Tensor, State]:
        q, k, v, o, i_pre, logf = self._project(x)
        C0, n0, m0 = state
        Fc = logf.cumsum(-1)  # [B,H,T]
        pair = same_segment(resets)[:, None]  # [B,1,T,S]
        logD = (Fc[..., :, None] - Fc[..., None, :] + i_pre[..., None, :]).masked_fill(~pair, NEG)
        live = alive(resets)[:, None]  # [B,1,T]
        # log-weight of the state a token continues: the incoming one (m0) before any reset,
        # the zero state restarted at the latest reset after it (its m starts at 0 there)
        T = x.shape[1]
        start = torch.arange(T, device=x.device) - positions_in_segment(resets)  # [B,T]
        F_prev = torch.cat([torch.zeros_like(Fc[..., :1]), Fc[..., :-1]], -1)
        logS = Fc - F_prev.gather(-1, start[:, None].expand_as(Fc)) + live * m0[..., None]
        m = torch.maximum(logD.max(-1).values, logS)  # [B,H,T]
        Dm = torch.exp(logD - m[..., None])
        Sm = torch.exp(logS - m)[..., None] * live[..., None]  # [B,H,T,1]; C and n are 0 after a reset
        Cqk = (q @ k.transpose(-1, -2)) * Dm
        num = Cqk @ v + Sm * (q @ C0.transpose(-1, -2))
        den = Cqk.sum(-1, keepdim=True) + Sm * (q * n0[:, :, None]).sum(-1, keepdim=True)
        h = num / torch.maximum(den.abs(), torch.exp(-m)[..., None])
        # final state = the recurrence's, with the last row's stabiliser
        mT = m[..., -1]
        wT = Dm[..., -1, :]  # [B,H,S] = exp(logD[T-1, s] - m_T)
        sT = Sm[..., -1, :]  # [B,H,1]
        C = torch.einsum("bhs,bhsi,bhsj->bhij", wT, v, k) + sT[..., None] * C0
        n = torch.einsum("bhs,bhsj->bhj", wT, k) + sT * n0
        return self._output(h, o), (C, n, mT)
