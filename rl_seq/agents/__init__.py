"""Agents: one class per algorithm; the named systems of DESIGN.md are presets of them."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from rl_seq.agents.base import Agent, EvalResult
from rl_seq.agents.decision import DecisionAgent, DecisionConfig
from rl_seq.agents.in_context import DPTAgent, InContextAgent, InContextConfig
from rl_seq.agents.odt import ODTAgent, ODTConfig
from rl_seq.agents.ppo import PPOAgent, PPOConfig
from rl_seq.agents.q_transformer import QTAgent, QTConfig
from rl_seq.agents.value_guided import VDTAgent, VDTConfig
from rl_seq.config import build, merge, read_layers, to_dict
from rl_seq.kernels import MIXERS, mixer_options

# name -> (agent class, preset over the config defaults, one-line description)
PRESETS: dict[str, tuple[type[Agent], dict, str]] = {
    "dt": (DecisionAgent, dict(backbone=dict(mixer="attention", n_heads=1, activation="relu",
                                                            init="gpt2", mixer_options=dict(dropout=0.1))),
           "Decision Transformer: return-conditioned BC, causal softmax attention"),
    "odt": (ODTAgent, dict(backbone=dict(mixer="attention", n_heads=1, activation="relu",
                                                          init="gpt2", mixer_options=dict(dropout=0.1))),
            "Online Decision Transformer: dt pretrained offline, then fine-tuned online (stochastic policy)"),
    "dc": (DecisionAgent, dict(backbone=dict(mixer="conv", mixer_options=dict(kernel_size=6))),
           "Decision ConvFormer: return-conditioned BC, causal depthwise convolution"),
    "ds4": (DecisionAgent, dict(context=100, backbone=dict(mixer="s4d", dropout=0.0)),
            "Decision-S4: return-conditioned BC on long windows, S4D state space"),
    "lram": (DecisionAgent, dict(backbone=dict(mixer="mlstm", n_heads=4)),
             "xLSTM Large Recurrent Action Model: return-conditioned BC, mLSTM"),
    "vdt": (VDTAgent, dict(backbone=dict(mixer="attention", n_heads=1, activation="relu",
                                                          init="gpt2", mixer_options=dict(dropout=0.1))),
            "value-guided Decision Transformer: dt regularised by a learnt critic (Q-value Regularized Transformer)"),
    "qt": (QTAgent, dict(backbone=dict(mixer="attention", n_heads=1)),
           "Q-Transformer: per-dimension autoregressive Q-learning, causal softmax attention"),
    # ad / dpt: small models (the tasks are small) and a larger learning rate than DT's
    "ad": (InContextAgent, dict(lr=3e-4, backbone=dict(mixer="attention", d_model=64, n_layers=3, n_heads=2,
                                                       dropout=0.0)),
           "Algorithm Distillation: in-context RL from learning histories across episodes"),
    "dpt": (DPTAgent, dict(lr=3e-4, backbone=dict(mixer="attention", d_model=64, n_layers=3, n_heads=2,
                                                  dropout=0.0)),
            "Decision-Pretrained Transformer: in-context RL from optimal-action labels"),
    "gtrxl": (PPOAgent, dict(backbone=dict(mixer="xl_attention", block="gtrxl", d_model=64, n_layers=2, n_heads=4,
                                            mixer_options=dict(memory=64))),
              "GTrXL: recurrent PPO, Transformer-XL attention with memory, GRU-gated blocks"),
    # relit: gate biases start at -1 (each step keeps ~73% of the memory, not 50%), like an LSTM's
    # forget-gate bias, so early in training the memory holds a cue across a corridor; conv=4: a
    # 4-tap input convolution and a value skip (Mamba's layout), because the gated, normalised
    # read-out alone returns a recent token only with both gates saturated
    "relit": (PPOAgent, dict(backbone=dict(mixer="agalite", block="gtrxl", d_model=64, n_layers=2, n_heads=4,
                                            mixer_options=dict(eta=4, r=4, gate_bias=-1.0, conv=4))),
              "recurrent linear transformer (AGaLiTe; --backbone linear for GaLiTe): recurrent PPO"),
    # lstm: backpropagation through 64 steps (popgym episodes are about 50), GAE lambda 0.8 (less
    # variance from the later, unrelated steps of memory tasks) and rewards scaled by the running
    # std of the return
    "lstm": (PPOAgent, dict(backbone=dict(mixer="lstm", d_model=128, n_layers=1), seq_len=64, gae_lambda=0.8,
                            norm_reward=True),
             "LSTM baseline: recurrent PPO"),
}
ALGOS: dict[str, type[Agent]] = {name: cls for name, (cls, _, _) in PRESETS.items()}


def algos_that(trait: str, value: bool = True) -> str:
    """The algorithms whose class ``trait`` (``online``, ``data_parallel``) is ``value``, for
    messages: "dt, dc, ds4, lram and qt"."""
    names = [n for n, cls in ALGOS.items() if getattr(cls, trait) == value]
    return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else "".join(names)


def config_for(name: str, path=None, overrides: list[str] | None = None, **fields) -> Any:
    """The config of algorithm ``name``: defaults <- preset <- ``fields`` <- YAML file <-
    ``key=value`` overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown algorithm {name!r}; choose one of {', '.join(PRESETS)}")
    cls, preset, _ = PRESETS[name]
    user = merge(fields, read_layers(path, overrides, expected_algo=name))
    pb = preset.get("backbone", {})
    mixer = user.get("backbone", {}).get("mixer", pb.get("mixer")) if isinstance(user.get("backbone"), dict) else None
    if mixer != pb.get("mixer") and mixer in MIXERS:
        # a swapped mixer keeps only the preset mixer's options it accepts (relit --backbone
        # linear keeps eta and gate_bias, drops r), beside any the caller set (odt --init from a
        # ds4 run with state_size)
        accepted = mixer_options(mixer)
        kept = {k: v for k, v in pb.get("mixer_options", {}).items() if k in accepted}
        preset = {**preset, "backbone": {**pb, "mixer_options": kept}}
    return build(cls.config_class, merge(merge(to_dict(cls.config_class()), preset), user))


def make_agent(name: str, env_or_spaces: Any = None, *, dataset: Any = None,
               config: Any = None, **fields) -> Agent:
    """Build an agent. Spaces come from ``env_or_spaces`` (an env, an env id, or an
    ``(observation_space, action_space)`` pair) or from ``dataset`` (an id or Episodes).
    ``fields`` are config fields (``lr=3e-4``, ``backbone={"mixer": "conv"}``)."""
    if config is None:
        config = config_for(name, **fields)
    if name not in PRESETS:
        config_for(name)  # the helpful error
    cls = PRESETS[name][0]
    if dataset is not None:
        eps = cls.load_data(dataset) if isinstance(dataset, str) else dataset
        obs_space, act_space = eps.env_observation_space, eps.action_space
    elif isinstance(env_or_spaces, tuple):
        obs_space, act_space = env_or_spaces
    elif env_or_spaces is not None:
        env = gym.make(env_or_spaces) if isinstance(env_or_spaces, str) else env_or_spaces
        obs_space, act_space = env.observation_space, env.action_space
    else:
        raise ValueError("make_agent needs an env, a pair of spaces or a dataset")
    agent = cls(obs_space, act_space, config, algo=name)
    if dataset is not None:
        agent.setup_from_data(eps)
    return agent


def load_agent(path) -> Agent:
    """Load an agent saved with ``agent.save`` (or a run folder's final model)."""
    return Agent.load(path)


__all__ = ["Agent", "EvalResult", "DecisionAgent", "DecisionConfig", "InContextAgent", "DPTAgent",
           "InContextConfig", "ODTAgent", "ODTConfig", "QTAgent", "QTConfig",
           "VDTAgent", "VDTConfig", "PPOAgent", "PPOConfig", "ALGOS", "PRESETS", "make_agent", "load_agent",
           "config_for"]
