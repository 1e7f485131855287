"""Kernel backend: every sequence mixer behind one contract (see ``base.Mixer``).

``make_mixer(name, d_model, n_heads, backend=..., **options)`` builds one by name;
``MIXERS`` lists the names. The backend is decided here, in one place, and logged:

- ``"torch"`` (default): the fast pure-PyTorch path (chunked / FFT / fused / SDPA);
- ``"reference"``: the short naive specification each mixer keeps beside its fast path;
- ``"accelerated"``: an optional GPU kernel where one is installed for that mixer; where
  none is (no GPU, package missing, or no such kernel), it falls back to ``"torch"`` with a
  log line - never silently.
"""

from __future__ import annotations

import inspect
import logging

import torch

from rl_seq.kernels.attention import Attention
from rl_seq.kernels.base import Mixer, State
from rl_seq.kernels.conv import CausalConv
from rl_seq.kernels.linear import AGaLiTe, GaLiTe
from rl_seq.kernels.lstm import LSTM
from rl_seq.kernels.mlstm import MLSTM
from rl_seq.kernels.none import NoMixer
from rl_seq.kernels.s4d import S4D
from rl_seq.kernels.xl_attention import XLAttention

log = logging.getLogger(__name__)

_REGISTRY: dict[str, type[Mixer]] = {
    "attention": Attention,
    "xl_attention": XLAttention,
    "linear": GaLiTe,
    "agalite": AGaLiTe,
    "s4d": S4D,
    "mlstm": MLSTM,
    "conv": CausalConv,
    "lstm": LSTM,
    "none": NoMixer,
}
MIXERS: tuple[str, ...] = tuple(_REGISTRY)
BACKENDS: tuple[str, ...] = ("torch", "reference", "accelerated")
# mixers with an accelerated kernel wired in, and the module it needs. None yet: a kernel
# (flash-linear-attention, mlstm-kernels) is wired in only with GPU tests holding it to the
# reference, and no GPU has been available to run them (issue #16); the extras come with it.
_ACCELERATED: dict[str, str] = {}


def resolve_backend(backend: str, mixer: str) -> str:
    """The backend a mixer will really run, logged when it differs from the request."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if backend != "accelerated":
        return backend
    module = _ACCELERATED.get(mixer)
    why = None
    if module is None:
        why = f"no accelerated kernel is wired in for {mixer!r}"
    elif not torch.cuda.is_available():
        why = "no GPU is available"
    else:
        try:
            __import__(module)
        except ImportError:
            why = f"{module} is not installed"
    if why:
        log.warning("backend 'accelerated' for %s falls back to 'torch': %s", mixer, why)
        return "torch"
    return backend


def mixer_options(name: str) -> set[str]:
    """The keyword options mixer ``name`` accepts (``eta``, ``window``, ...)."""
    params = inspect.signature(_REGISTRY[name].__init__).parameters
    return {k for k, p in params.items() if p.kind is p.KEYWORD_ONLY and k != "backend"}


def make_mixer(name: str, d_model: int, n_heads: int = 1, *, backend: str = "torch",
               **options) -> Mixer:
    """Build the mixer ``name`` (one of ``MIXERS``). ``options`` are the mixer's own
    keyword arguments (``window``, ``memory``, ``eta``, ``r``, ``state_size``,
    ``kernel_size``, ...)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown mixer {name!r}; choose one of {', '.join(MIXERS)}")
    cls = _REGISTRY[name]
    try:
        return cls(d_model, n_heads, backend=resolve_backend(backend, name), **options)
    except TypeError as e:
        raise TypeError(f"bad option for mixer {name!r}: {e}") from None


__all__ = ["MIXERS", "BACKENDS", "Mixer", "State", "make_mixer", "mixer_options", "resolve_backend"]
