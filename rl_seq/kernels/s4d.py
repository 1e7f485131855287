"""S4D: a diagonal state space layer (Gu et al. 2022), one SSM per channel.

Per channel, N/2 complex modes with ZOH discretisation
``Ā = exp(Δ·A)``, ``B̄ = (Ā - 1)/A``:

    h_t = Ā ⊙ h_{t-1} + B̄ u_t,    y_t = 2·Re(C · h_t) + D u_t

``forward`` is the FFT convolution with the kernel ``K_l = 2·Re(C B̄ Ā^l)``, run on the
pieces between resets (cut apart, so the convolution stays exact), plus the incoming
state's decaying contribution. ``step`` is the recurrence. A position-wise GELU and a
linear layer mix the channels. State: ``(h [B, D, N/2] complex64,)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rl_seq.kernels.base import Mixer, PackedSegments, State, alive


class S4D(Mixer):
    """Args: d_model (channels), n_heads (unused, kept for the common signature),
    state_size N (N/2 complex modes per channel), dt_min/dt_max (range of the learned
    step sizes), backend."""

    name = "s4d"

    def __init__(self, d_model: int, n_heads: int = 1, *, state_size: int = 64,
                 dt_min: float = 1e-3, dt_max: float = 1e-1, backend: str = "torch") -> None:
        super().__init__(d_model, 1, backend)
        if state_size < 2:
            raise ValueError(f"state_size must be >= 2 (state_size // 2 complex modes), got {state_size}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"the step sizes must satisfy 0 < dt_min <= dt_max, got {dt_min} and {dt_max}")
        n = state_size // 2
        self.n_modes = n
        self.log_dt = nn.Parameter(
            torch.rand(d_model) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        self.log_a_real = nn.Parameter(torch.log(0.5 * torch.ones(d_model, n)))
        self.a_imag = nn.Parameter(math.pi * torch.arange(n).float().expand(d_model, n).clone())
        self.c = nn.Parameter(torch.randn(d_model, n, 2) * math.sqrt(0.5))
        self.skip = nn.Parameter(torch.ones(d_model))
        self.out = nn.Linear(d_model, d_model)

    def init_state(self, batch_size: int, device=None) -> State:
        return (torch.zeros(batch_size, self.d_model, self.n_modes, dtype=torch.complex64,
                            device=device),)

    def _discrete(self):
        """Ā, B̄·C (folded) as complex [D, N/2]."""
        A = torch.complex(-torch.exp(self.log_a_real), self.a_imag)
        dtA = A * torch.exp(self.log_dt)[:, None]
        a_bar = torch.exp(dtA)
        b_bar = (a_bar - 1.0) / A
        return a_bar, b_bar, torch.view_as_complex(self.c), dtA

    def _finish(self, y: Tensor, u: Tensor) -> Tensor:
        return self.out(F.gelu(y + self.skip * u))

    def _step(self, x: Tensor, state: State, reset: Tensor) -> tuple[Tensor, State]:
        a_bar, b_bar, c, _ = self._discrete()
        h = state[0] * (~reset).view(-1, 1, 1)
        h = a_bar * h + b_bar * x.to(torch.complex64)[..., None]
        y = 2 * (c * h).sum(-1).real
        return self._finish(y, x), (h,)

    def forward_reference(self, x: Tensor, state: State, resets: Tensor) -> tuple[Tensor, State]:
        a_bar, b_bar, c, _ = self._discrete()
        h = state[0]
        ys = []
        for t in range(x.shape[1]):
            h = h * (~resets[:, t]).view(-1, 1, 1)
            h = a_bar * h + b_bar * x[:, t].to(torch.complex64)[..., None]
            ys.append(2 * (c * h).sum(-1).real)
        return self._finish(torch.stack(ys, 1), x), (h,)

    @torch.compiler.disable  # complex tensors and data-dependent segment packing: runs eagerly in a compiled model
    def forward_fast(self, x: Tensor, state: State, resets: Tensor) -> tuple[Tensor, State]:
        B, T, D = x.shape
        a_bar, b_bar, c, _ = self._discrete()
        # Ā^l = e^{l·Re(log Ā)} (cos + i sin)(l·Im(log Ā)) from real exp/cos/sin: complex exp (and
        # torch.polar) are not vectorised on CPU; complex exp took 60 ms on [128, 32, 301]
        log_a = torch.log(a_bar)  # [D,n], phase in (-π, π]: small angles keep cos/sin accurate
        l = torch.arange(T + 1, device=x.device, dtype=log_a.real.dtype)
        mag, ang = torch.exp(log_a.real[..., None] * l), log_a.imag[..., None] * l
        powers = torch.complex(mag * torch.cos(ang), mag * torch.sin(ang))  # [D,n,T+1]
        kernel = 2 * (c[..., None] * b_bar[..., None] * powers[..., :T]).sum(1).real  # [D, T]
        seg = PackedSegments(resets)
        u = seg.pack(x).transpose(1, 2)  # [S, D, T]
        n = 2 * T
        y = torch.fft.irfft(torch.fft.rfft(u, n) * torch.fft.rfft(kernel, n), n)[..., :T]
        y = seg.unpack(y.transpose(1, 2))  # [B, T, D]
        # the incoming state decays into the tokens before the first reset
        h0 = state[0]
        carry = 2 * torch.einsum("bdn,dnt->bdt", h0 * c, powers[..., 1:]).real  # [B,D,T]
        y = y + carry.transpose(1, 2) * alive(resets)[..., None]
        # final state: the last piece of each row, right-aligned so that its last token sits
        # at T-1, convolved with Ā^(T-1-j)
        piece = seg.pack(x)[seg.last]  # [B, T, D], left-aligned, zero padded
        shift = T - seg.lengths[seg.last]  # [B]
        j = torch.arange(T, device=x.device)[None] - shift[:, None]  # [B, T]
        aligned = piece.gather(1, j.clamp(min=0)[..., None].expand(B, T, D)) * (j >= 0)[..., None]
        rev = powers[..., :T].flip(-1)  # Ā^(T-1-j)
        h = torch.einsum("btd,dnt->bdn", aligned.to(torch.complex64), rev) * b_bar
        h = h + alive(resets)[:, -1, None, None] * powers[..., T] * h0
        return self._finish(y, x), (h,)
