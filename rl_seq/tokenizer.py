"""TrajectoryTokenizer: trajectory fields -> one token sequence ``[B, T*k, D]``, and back.

A *layout* is a comma-separated list of the k token slots of one timestep; a slot is one
field or several joined with ``+`` (their embeddings are summed into one token):

====================  ====================================================  ==========
layout                meaning                                               used by
====================  ====================================================  ==========
``rtg,obs,act``       return-to-go, state, action (3 tokens per step)        dt dc ds4 lram
``obs,act``           state, action                                         BC
``obs+prev_act+prev_rew``  one token: state, previous action and reward     online memory
``obs,act_dims``      state, then one token per discretised action dim       qt
``obs+prev_act+prev_rew``  the same token across a task's episodes, no reset    ad
``obs+act+rew``       one token per transition of an in-context dataset     dpt
====================  ====================================================  ==========

Fields (``[B, T, ...]``): ``obs``, ``act``, ``rtg`` ([B,T] or [B,T,1]), ``rew``, ``prev_act``,
``prev_rew``, ``timestep`` (long [B,T], optional). ``act_dims`` reads ``act`` through the
uniform per-dimension :class:`ActionDiscretiser` and expands to ``action_dim`` slots.
Every token of step t gets the timestep embedding of t (when ``max_timestep`` is set).

``read(h, slot)`` returns the outputs at one slot, ``[B, T, D]``; heads read there, e.g.
the action of step t is predicted from the ``obs`` slot (``h[:, 1::3]`` for ``rtg,obs,act``).
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

FIELDS = ("obs", "act", "rtg", "rew", "prev_act", "prev_rew", "act_dims")


class ActionDiscretiser(nn.Module):
    """Uniform bins per dimension of a bounded Box: ``n_bins`` equal cells between low and
    high; decode returns cell centres, so encode(decode(i)) == i exactly. A Discrete(n) space
    is one dimension whose bins are its actions (``n_bins`` is then n, whatever was asked):
    bin i is action ``start + i``."""

    def __init__(self, space: gym.spaces.Box | gym.spaces.Discrete, n_bins: int = 256) -> None:
        super().__init__()
        self.discrete = isinstance(space, gym.spaces.Discrete)
        if self.discrete:
            n_bins, low, high = int(space.n), [int(space.start)], [int(space.start) + int(space.n)]
        elif isinstance(space, gym.spaces.Box) and space.is_bounded("both"):
            low, high = space.low, space.high
        else:
            raise ValueError(f"action discretisation needs a bounded Box or a Discrete space, got {space}")
        if n_bins < 2:
            raise ValueError(f"n_bins must be >= 2, got {n_bins}")
        self.n_bins = n_bins
        self.register_buffer("low", torch.as_tensor(low, dtype=torch.float32).flatten())
        self.register_buffer("high", torch.as_tensor(high, dtype=torch.float32).flatten())

    @property
    def dims(self) -> int:
        return self.low.numel()

    def encode(self, a: Tensor) -> Tensor:
        """a [..., d] float -> long [..., d] in [0, n_bins)."""
        u = (a - self.low) / (self.high - self.low)
        return (u * self.n_bins + (0.5 if self.discrete else 0.0)).floor().long().clamp(0, self.n_bins - 1)

    def decode(self, idx: Tensor) -> Tensor:
        """long [..., d] -> float [..., d] (bin centres; Discrete: the actions)."""
        offset = 0.0 if self.discrete else 0.5
        return self.low + (idx.float() + offset) * (self.high - self.low) / self.n_bins

    def centres(self, dim: int) -> Tensor:
        """The bin centres of dimension ``dim``, [n_bins] (``decode`` of every bin)."""
        idx = torch.arange(self.n_bins, device=self.low.device).float()
        offset = 0.0 if self.discrete else 0.5
        return self.low[dim] + (idx + offset) * (self.high[dim] - self.low[dim]) / self.n_bins


def is_image_space(space: gym.Space) -> bool:
    return isinstance(space, gym.spaces.Box) and len(space.shape) == 3 and space.shape[-1] in (1, 3, 4)


def is_grid_space(space: gym.Space) -> bool:
    """A small uint8 image (both sides <= 16, e.g. MiniGrid's 7x7x3 view) is read as a grid of
    symbols: each channel's value has its own embedding (a MiniGrid cell's object, colour and
    state indices are categories, not intensities). Larger frames (84x84 Atari) go through the
    strided CNN."""
    return is_image_space(space) and space.dtype == np.uint8 and max(space.shape[:2]) <= 16


class SpaceEmbedding(nn.Module):
    """Embeds values of one Gymnasium space into D. Box: (x - mean)/std then linear; image
    Box [H,W,C]: a small strided CNN, or for a small uint8 grid (:func:`is_grid_space`) a table
    per channel value summed per cell, then two 3x3 convolutions; Discrete: a table; MultiDiscrete: summed tables;
    MultiBinary: linear. A Dict/Tuple space with image leaves (its other composites reach
    the tokenizer as their flat Box): the flat observation of :mod:`rl_seq.data.episodes`,
    each image leaf through its own CNN, the rest (Box parts normalised, one-hot and bit parts
    as they are) through one linear map, summed."""

    def __init__(self, space: gym.Space, d_model: int) -> None:
        super().__init__()
        self.space = space
        if is_image_space(space) and is_grid_space(space):
            H, W, C = space.shape  # each cell's values are symbols (object, colour, state): tables, then convs
            self.cells = nn.Embedding(256 * C, 16)
            self.register_buffer("channel_offsets", torch.arange(C) * 256)
            self.net = nn.Sequential(
                nn.Conv2d(16, 32, 3, 1, 1), nn.ReLU(), nn.Conv2d(32, 32, 3, 1, 1), nn.ReLU(),
                nn.Flatten(), nn.Linear(32 * H * W, d_model))
            self.kind = "grid"
        elif is_image_space(space):
            H, W, C = space.shape
            self.net = nn.Sequential(
                nn.Conv2d(C, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
                nn.Flatten(), nn.Linear(32 * math.ceil(H / 4) * math.ceil(W / 4), d_model))
            self.kind = "image"
            self.scale = 255.0 if space.dtype == np.uint8 else 1.0
        elif isinstance(space, gym.spaces.Box):
            n = int(np.prod(space.shape))
            self.net = nn.Linear(n, d_model)
            self.register_buffer("mean", torch.zeros(n))
            self.register_buffer("std", torch.ones(n))
            self.kind = "box"
        elif isinstance(space, gym.spaces.Discrete):
            self.net = nn.Embedding(int(space.n), d_model)
            self.kind = "discrete"
            self.start = int(space.start)
        elif isinstance(space, gym.spaces.MultiDiscrete):
            nvec = torch.as_tensor(space.nvec, dtype=torch.long).flatten()
            self.register_buffer("offsets", torch.cat([torch.zeros(1, dtype=torch.long), nvec.cumsum(0)[:-1]]))
            self.net = nn.Embedding(int(nvec.sum()), d_model)
            self.kind = "multidiscrete"
        elif isinstance(space, gym.spaces.MultiBinary):
            self.net = nn.Linear(int(np.prod(space.shape)), d_model)
            self.kind = "multibinary"
        elif isinstance(space, gym.spaces.Dict | gym.spaces.Tuple):
            from rl_seq.data.episodes import box_dims, composite_leaves

            self.kind, start, vector = "composite", 0, []
            self.images, self.image_slices = nn.ModuleList(), []
            for leaf in composite_leaves(space):
                n = gym.spaces.flatdim(leaf)
                if is_image_space(leaf):
                    self.images.append(SpaceEmbedding(leaf, d_model))
                    self.image_slices.append((start, start + n))
                else:
                    vector.extend(range(start, start + n))
                start += n
            self.register_buffer("vector", torch.as_tensor(vector, dtype=torch.long))
            self.register_buffer("box", torch.as_tensor(box_dims(space)[vector], dtype=torch.bool))
            self.net = nn.Linear(len(vector), d_model) if vector else None
            self.register_buffer("mean", torch.zeros(len(vector)))
            self.register_buffer("std", torch.ones(len(vector)))
        else:
            raise TypeError(
                f"no embedding for space {space}; Dict/Tuple observations are flattened by "
                "rl_seq.data (see Episodes.from_minari) before they reach the tokenizer")

    def set_normalization(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Statistics of the (flat) observation: a Box's, or a composite space's (applied to
        its Box parts)."""
        mean = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std = torch.as_tensor(std, dtype=torch.float32).flatten().clamp_min(1e-6)
        if self.kind == "composite":
            mean, std = mean[self.vector].where(self.box, 0.0), std[self.vector].where(self.box, 1.0)
        elif self.kind != "box":
            raise TypeError("normalisation statistics apply to Box and composite spaces only")
        self.mean.copy_(mean)
        self.std.copy_(std)

    def forward(self, x: Tensor) -> Tensor:
        """x [B, T, *space.shape] -> [B, T, D]"""
        lead = x.shape[:2]
        if self.kind == "grid":  # [.., H, W, C] values -> summed per-channel embeddings [N, 16, H, W]
            cells = x.reshape(-1, *x.shape[2:]).long().clamp(0, 255) + self.channel_offsets
            return self.net(self.cells(cells).sum(-2).permute(0, 3, 1, 2)).view(*lead, -1)
        if self.kind == "image":
            img = x.reshape(-1, *x.shape[2:]).float().permute(0, 3, 1, 2) / self.scale
            return self.net(img).view(*lead, -1)
        if self.kind == "box":
            return self.net((x.reshape(*lead, -1).float() - self.mean) / self.std)
        if self.kind == "composite":
            x = x.reshape(*lead, -1).float()
            out = sum(m(x[..., a:b].reshape(*lead, *m.space.shape))
                      for m, (a, b) in zip(self.images, self.image_slices, strict=True))
            if self.net is not None:
                out = out + self.net((x[..., self.vector] - self.mean) / self.std)
            return out
        if self.kind == "discrete":
            return self.net(x.long().reshape(lead) - self.start)
        if self.kind == "multidiscrete":
            return self.net(x.long().reshape(*lead, -1) + self.offsets).sum(-2)
        return self.net(x.reshape(*lead, -1).float())


class TrajectoryTokenizer(nn.Module):
    """Args:
        observation_space, action_space: the env's spaces.
        d_model: token width D.
        layout: see the module docstring.
        max_timestep: size of the timestep table (None: no timestep embedding).
        n_bins: bins per action dimension for ``act_dims``.
    """

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, d_model: int,
                 layout: str = "rtg,obs,act", max_timestep: int | None = 1000,
                 n_bins: int = 256) -> None:
        super().__init__()
        self.layout = layout
        slots = [tuple(s.strip().split("+")) for s in layout.split(",")]
        for slot in slots:
            for f in slot:
                if f not in FIELDS:
                    raise ValueError(f"unknown field {f!r} in layout {layout!r}; fields: {FIELDS}")
        self.discretiser = None
        if any("act_dims" in s for s in slots):
            if slots[-1] != ("act_dims",):
                raise ValueError("'act_dims' must be the last slot of a layout")
            self.discretiser = ActionDiscretiser(action_space, n_bins)
            d = self.discretiser.dims
            slots = slots[:-1] + [(f"act_dim{i}",) for i in range(d)]
            self.bin_embed = nn.Embedding(self.discretiser.n_bins, d_model)
            self.dim_embed = nn.Embedding(d, d_model)
        self.slots: list[tuple[str, ...]] = slots
        self.k = len(slots)
        self.d_model = d_model
        used = {f for s in slots for f in s}
        self.embed = nn.ModuleDict()
        if "obs" in used:
            self.embed["obs"] = SpaceEmbedding(observation_space, d_model)
        if "act" in used or "prev_act" in used:
            self.embed["act"] = SpaceEmbedding(action_space, d_model)
        if "rtg" in used:
            self.embed["rtg"] = nn.Linear(1, d_model)
        for name in ("rew", "prev_rew"):
            if name in used:
                self.embed[name] = nn.Linear(1, d_model)
        self.max_timestep = max_timestep
        self.time = nn.Embedding(max_timestep + 1, d_model) if max_timestep else None
        if self.time is not None:
            # GPT-2's init, as the reference Decision Transformers: with PyTorch's N(0, 1) each
            # token would carry a fixed random vector (norm ~sqrt(D)) larger than the state,
            # return and action embeddings, which AdamW at lr 1e-4 barely moves in 10k steps
            nn.init.normal_(self.time.weight, std=0.02)
        self.ln = nn.LayerNorm(d_model)

    # -- observation normalisation (Box observations; statistics live in the embedding) -------
    @property
    def box_observations(self) -> bool:
        """Observations are a (non-image) Box: float inputs, normalised by statistics."""
        return "obs" in self.embed and self.embed["obs"].kind == "box"

    def set_observation_stats(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Normalise Box observations (and a composite space's Box parts) by ``mean``/``std``
        (no-op for other spaces)."""
        if "obs" in self.embed and self.embed["obs"].kind in ("box", "composite"):
            self.embed["obs"].set_normalization(mean, std)

    def normalize_observations(self, obs: Tensor) -> Tensor:
        """Box obs [..., *obs_shape] -> [..., prod(obs_shape)], (obs - mean) / std as the
        embedding sees them."""
        if not self.box_observations:
            raise TypeError("observation statistics apply to Box observations only")
        e = self.embed["obs"]
        x = obs.reshape(*obs.shape[:obs.dim() - len(e.space.shape)], -1)
        return (x - e.mean) / e.std

    def slot_index(self, field: str) -> int:
        """Index of the slot holding ``field`` (``"obs"``, ``"rtg"``, ``"act_dim0"``...)."""
        for i, slot in enumerate(self.slots):
            if field in slot:
                return i
        raise KeyError(f"layout {self.layout!r} has no slot for {field!r}")

    def _field(self, name: str, fields: dict[str, Tensor]) -> Tensor:
        if name.startswith("act_dim"):
            i = int(name[7:])
            bins = self.discretiser.encode(fields["act"].float())[..., i]
            return self.bin_embed(bins) + self.dim_embed.weight[i]
        if name not in fields:
            raise KeyError(f"layout {self.layout!r} needs field {name!r}; got {sorted(fields)}")
        x = fields[name]
        if name in ("rtg", "rew", "prev_rew"):
            return self.embed[name](x.float().reshape(*x.shape[:2], 1))
        return self.embed["act" if name == "prev_act" else name](x)

    def _slot(self, i: int, fields: dict[str, Tensor]) -> Tensor:
        tok = sum(self._field(f, fields) for f in self.slots[i])
        if self.time is not None and "timestep" in fields:
            tok = tok + self.time(fields["timestep"].long().clamp(0, self.max_timestep))
        return self.ln(tok)

    def forward(self, fields: dict[str, Tensor]) -> Tensor:
        """fields [B, T, ...] -> tokens [B, T*k, D], slots interleaved per step."""
        toks = torch.stack([self._slot(i, fields) for i in range(self.k)], 2)  # [B,T,k,D]
        B, T = toks.shape[:2]
        return toks.reshape(B, T * self.k, self.d_model)

    def embed_slots(self, fields: dict[str, Tensor], slots: list[int]) -> Tensor:
        """The tokens of some slots of one step, for acting. fields [B, ...] (no time
        axis) -> [B, len(slots), D]."""
        f = {k: v[:, None] for k, v in fields.items()}
        return torch.cat([self._slot(i, f) for i in slots], 1)

    def token_flags(self, flags: Tensor, first_only: bool = True) -> Tensor:
        """Per-step flags [B, T] -> per-token [B, T*k]. ``first_only``: only the first slot
        of a flagged step is flagged (episode starts); else every slot (masks)."""
        B, T = flags.shape
        out = flags[:, :, None].expand(B, T, self.k)
        if first_only:
            out = torch.cat([flags[:, :, None], torch.zeros_like(out[..., 1:])], -1)
        return out.reshape(B, T * self.k)

    def read(self, h: Tensor, field: str) -> Tensor:
        """h [B, T*k, D] -> the outputs at the slot holding ``field``, [B, T, D]."""
        B, L, D = h.shape
        return h.view(B, L // self.k, self.k, D)[:, :, self.slot_index(field)]
