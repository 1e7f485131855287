"""rl_seq inside Stable-Baselines3.

1. Every rl_seq agent answers SB3's ``predict``; ``agent.wrap_env(env)`` feeds rewards to
   agents whose tokens read them (return-to-go, previous reward) in SB3 loops.
2. :class:`RlSeqRecurrentPolicy`: a policy for sb3-contrib's ``RecurrentPPO`` whose memory is
   any rl_seq backbone (``relit``, ``gtrxl``, ``s4d``, ``mlstm``, ``lstm`` or a mixer name).
   Training runs each minibatch of sequences through the backbone's parallel ``forward``
   with resets at episode starts - no per-step Python loop.
3. :class:`RlSeqHistoryExtractor`: a features extractor running a backbone over a stacked
   history of observations (``VecFrameStack``), for plain PPO, A2C, SAC, TD3 and DQN.
4. :func:`episodes_from_replay_buffer`: an SB3 replay buffer as rl_seq episodes.

sb3-contrib keeps recurrent states as an LSTM's ``(h, c)`` pair of ``[layers, envs, hidden]``
tensors; the policy flattens the backbone's state into ``h`` (``c`` is unused zeros), so SB3's
rollout buffer, ``save``/``load`` and callbacks work unchanged. Every rl_seq mixer's initial
state is all zeros, which is what SB3 hands a policy at the start.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from rl_seq.kernels import mixer_options
from rl_seq.nets import Backbone, BackboneConfig


def _preset_memory(name: str) -> dict:
    from rl_seq.agents import PRESETS

    return {k: v for k, v in PRESETS[name][1]["backbone"].items() if k in ("mixer", "block", "mixer_options")}


# named memories: the PPO presets' mixers and blocks (sizes come from the policy's arguments)
MEMORIES = {
    "relit": _preset_memory("relit"),
    "galite": {**_preset_memory("relit"), "mixer": "linear",  # relit's options GaLiTe accepts (no r)
               "mixer_options": {k: v for k, v in _preset_memory("relit")["mixer_options"].items()
                                 if k in mixer_options("linear")}},
    "gtrxl": _preset_memory("gtrxl"),
    "s4d": dict(mixer="s4d"),
    "mlstm": dict(mixer="mlstm"),
    "lstm": dict(mixer="lstm", mlp_ratio=4),
}


def backbone_config(backbone: str, d_model: int, n_layers: int, n_heads: int, **overrides) -> BackboneConfig:
    spec = dict(MEMORIES.get(backbone, dict(mixer=backbone)))
    spec.update(d_model=d_model, n_layers=n_layers, dropout=0.0,
                n_heads=1 if spec["mixer"] in ("s4d", "conv", "lstm", "none") else n_heads)
    spec.update(overrides)
    return BackboneConfig(**spec)


class SeqMemory(nn.Module):
    """Input projection + an rl_seq backbone, with its state flattened to one vector per env
    (``hidden_size`` floats), standing where sb3-contrib expects an ``nn.LSTM``."""

    num_layers = 1

    def __init__(self, input_size: int, cfg: BackboneConfig) -> None:
        super().__init__()
        self.input_size = input_size
        self.proj = nn.Linear(input_size, cfg.d_model)
        self.backbone = Backbone(None, cfg)
        self._layout = [(t.shape[1:], t.dtype) for t in _leaves(self.backbone.init_state(1))]
        self.hidden_size = sum(_width(shape, dtype) for shape, dtype in self._layout)

    def flatten(self, state) -> Tensor:
        """backbone state (leaves [B, ...]) -> [B, hidden_size] float32"""
        parts = []
        for t in _leaves(state):
            t = torch.view_as_real(t) if t.is_complex() else t
            parts.append(t.reshape(t.shape[0], -1).float())
        return torch.cat(parts, 1)

    def unflatten(self, flat: Tensor):
        B, out, i = flat.shape[0], [], 0
        for shape, dtype in self._layout:
            w = _width(shape, dtype)
            x = flat[:, i:i + w]
            i += w
            if dtype.is_complex:
                x = torch.view_as_complex(x.reshape(B, *shape, 2).contiguous())
            elif dtype == torch.bool:
                x = x.reshape(B, *shape) > 0.5
            else:
                x = x.reshape(B, *shape).to(dtype)
            out.append(x)
        return _rebuild(self.backbone.init_state(1), iter(out))

    def forward(self, features: Tensor, state: tuple[Tensor, Tensor], episode_starts: Tensor):
        """sb3-contrib's ``_process_sequence``: features [n_seq·L, F], state (h, c) each
        [1, n_seq, hidden], episode_starts [n_seq·L] -> (outputs [n_seq·L, D], (h, c))."""
        n_seq = state[0].shape[1]
        x = self.proj(features).reshape(n_seq, -1, self.backbone.cfg.d_model)
        starts = episode_starts.reshape(n_seq, -1) > 0.5
        # rollouts (one step per env) take the mixers' recurrent step, training the parallel forward
        h, new = self.backbone.step_tokens(x, self.unflatten(state[0][0]), starts)
        flat = self.flatten(new)[None]
        return h.reshape(-1, h.shape[-1]), (flat, torch.zeros_like(flat))


def _leaves(state) -> list[Tensor]:
    if isinstance(state, Tensor):
        return [state]
    return [leaf for s in state for leaf in _leaves(s)]


def _rebuild(template, it):
    if isinstance(template, Tensor):
        return next(it)
    return tuple(_rebuild(t, it) for t in template)


def _width(shape, dtype) -> int:
    return int(np.prod(shape)) * (2 if dtype.is_complex else 1)


try:
    from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
except ImportError:  # pragma: no cover - sb3-contrib is the `contrib` extra
    RecurrentActorCriticPolicy = None


if RecurrentActorCriticPolicy is not None:

    class RlSeqRecurrentPolicy(RecurrentActorCriticPolicy):
        """sb3-contrib ``RecurrentPPO`` policy with an rl_seq memory.

        Args (``policy_kwargs``): backbone (``relit``, ``gtrxl``, ``galite``, ``s4d``,
        ``mlstm``, ``lstm``, or any mixer name), d_model, n_layers, n_heads,
        backbone_kwargs (more BackboneConfig fields, e.g. ``{"mixer_options": {"memory":
        128}}``); the other arguments are RecurrentActorCriticPolicy's (``shared_lstm``,
        ``enable_critic_lstm``, ``net_arch``, ...). By default the critic has its own memory,
        as in sb3-contrib.
        """

        def __init__(self, observation_space, action_space, lr_schedule, backbone: str = "relit",
                     d_model: int = 64, n_layers: int = 2, n_heads: int = 4, backbone_kwargs: dict | None = None,
                     **kwargs) -> None:
            self.rl_seq_config = backbone_config(backbone, d_model, n_layers, n_heads, **(backbone_kwargs or {}))
            kwargs.pop("lstm_hidden_size", None)
            super().__init__(observation_space, action_space, lr_schedule, lstm_hidden_size=d_model, **kwargs)
            self.lstm_actor = SeqMemory(self.features_dim, self.rl_seq_config)
            if self.lstm_critic is not None:
                self.lstm_critic = SeqMemory(self.features_dim, self.rl_seq_config)
            self.lstm_hidden_state_shape = (1, 1, self.lstm_actor.hidden_size)
            self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

        def _process_sequence(self, features, lstm_states, episode_starts, lstm):  # type: ignore[override]
            return lstm(features, lstm_states, episode_starts)
else:  # pragma: no cover
    RlSeqRecurrentPolicy = None


from stable_baselines3.common.torch_layers import BaseFeaturesExtractor  # noqa: E402


class RlSeqHistoryExtractor(BaseFeaturesExtractor):
    """Runs an rl_seq backbone over a stacked history of observations and returns the
    features of the newest one.

    The observation must be a Box of ``n_stack`` frames stacked on its last axis (what SB3's
    ``VecFrameStack`` makes from a vector observation): shape ``[n_stack · obs_dim]``.

    Args: n_stack, backbone (as for RlSeqRecurrentPolicy), d_model, n_layers, n_heads,
    backbone_kwargs.
    """

    def __init__(self, observation_space: gym.spaces.Box, n_stack: int, backbone: str = "attention",
                 d_model: int = 64, n_layers: int = 1, n_heads: int = 4, backbone_kwargs: dict | None = None) -> None:
        super().__init__(observation_space, d_model)
        if observation_space.shape[-1] % n_stack:
            raise ValueError(f"observation size {observation_space.shape[-1]} is not a stack of n_stack={n_stack} "
                             "frames; wrap the env in VecFrameStack(env, n_stack) first")
        self.n_stack, self.frame = n_stack, observation_space.shape[-1] // n_stack
        self.proj = nn.Linear(self.frame, d_model)
        self.pos = nn.Parameter(torch.zeros(n_stack, d_model))
        self.backbone = Backbone(None, backbone_config(backbone, d_model, n_layers, n_heads, **(backbone_kwargs or {})))

    def forward(self, obs: Tensor) -> Tensor:
        """obs [B, n_stack·obs_dim] -> [B, d_model]"""
        x = self.proj(obs.reshape(obs.shape[0], self.n_stack, self.frame)) + self.pos
        h, _ = self.backbone.forward_tokens(x)
        return h[:, -1]


def episodes_from_replay_buffer(buffer, dataset_id: str = "sb3-replay-buffer"):
    """An SB3 ``ReplayBuffer`` as :class:`rl_seq.data.Episodes`, split per env at ``dones``:
    ``timeouts`` become truncations, the other dones terminations, and each episode's final
    observation is the ``next_observations`` of its last step. A trailing unfinished episode
    is kept as truncated at the buffer's end."""
    from rl_seq.data import Episodes

    n = buffer.buffer_size if buffer.full else buffer.pos
    if n == 0:
        raise ValueError("the replay buffer is empty")
    if buffer.full and buffer.pos:
        order = np.r_[buffer.pos:buffer.buffer_size, 0:buffer.pos]  # oldest first
    else:
        order = np.arange(n)
    if getattr(buffer, "optimize_memory_usage", False):
        raise ValueError("buffers with optimize_memory_usage=True keep no next_observations; create the "
                         "ReplayBuffer with optimize_memory_usage=False")
    eps = []
    for e in range(buffer.n_envs):
        obs, nxt = buffer.observations[order, e], buffer.next_observations[order, e]
        act, rew = buffer.actions[order, e], buffer.rewards[order, e]
        done, timeout = buffer.dones[order, e].astype(bool), buffer.timeouts[order, e].astype(bool)
        ends = list(np.flatnonzero(done)) + ([n - 1] if not done[-1] else [])
        start = 0
        for end in ends:
            sl = slice(start, end + 1)
            trunc = np.zeros(end + 1 - start, bool)
            term = np.zeros_like(trunc)
            if done[end] and not timeout[end]:
                term[-1] = True
            else:
                trunc[-1] = True
            act_e = act[sl]
            if isinstance(buffer.action_space, gym.spaces.Discrete):
                act_e = act_e.reshape(-1).astype(np.int64)
            eps.append(dict(observations=np.concatenate([obs[sl], nxt[end:end + 1]]), actions=act_e,
                            rewards=rew[sl], terminations=term, truncations=trunc))
            start = end + 1
    return Episodes.from_episode_list(eps, buffer.observation_space, buffer.action_space, dataset_id=dataset_id)


__all__ = ["RlSeqRecurrentPolicy", "RlSeqHistoryExtractor", "SeqMemory", "episodes_from_replay_buffer", "MEMORIES"]
