"""D4RL-style datasets for BabyAI levels, made with the level's expert bot
(``minigrid.utils.baby_ai_bot.BabyAIBot``, the one Minari's own BabyAI sets were recorded with).

``make_minigrid_datasets("BabyAI-GoToRedBallGrey-v0")`` writes ``minigrid/BabyAI-GoToRedBallGrey/LEVEL-v0``:

- ``optimal``: the bot's actions (Minari's remote id for the same bot on the same level; ours
  drop the level's constant mission text, see :mod:`rl_seq.envs.minigrid`);
- ``medium``: the bot with a share ``medium_noise`` (default 0.85) of uniformly random actions,
  drawn per step; the bot replans from wherever the random actions took the agent. The bot
  recovers from random actions well, so the share must be high for a medium level: 0.85 gives
  0.37 (GoToRedBallGrey) and 0.66 (UnlockLocal) of the way from random to the bot, 0.5 gave
  0.87 and 0.97 (docs/minigrid.md);
- ``mixed``: equal parts of episodes at random-action shares 1, 0.75, 0.5, 0.25 and 0, in that
  order (a replay of a learner that goes from random to the bot, like D4RL's medium-replay);
- ``random``: uniformly random actions.

The env of every level is ``rl_seq/MiniGrid-v0`` with ``level=...`` (partial 7x7x3 symbolic
view plus heading). ``ref_min_score`` is the random policy's mean return and
``ref_max_score`` the bot's, both over ``ref_episodes`` episodes. Episode ``i`` of a level starts
from env seed ``seed + offset + i`` and its random actions come from a generator seeded the same
way, so a level is the same on every machine.
"""

from __future__ import annotations

import logging

import gymnasium as gym
import numpy as np

log = logging.getLogger(__name__)
LEVELS = ("optimal", "medium", "mixed", "random")
MIXED_SHARES = (1.0, 0.75, 0.5, 0.25, 0.0)
MEDIUM_NOISE = 0.85
_OFFSET = dict(optimal=0, medium=1_000_000, mixed=2_000_000, random=3_000_000, ref=4_000_000)


def dataset_id(level: str, kind: str, namespace: str = "minigrid") -> str:
    """``minigrid/BabyAI-GoToRedBallGrey/optimal-v0`` for ``BabyAI-GoToRedBallGrey-v0``."""
    return f"{namespace}/{level.rsplit('-v', 1)[0]}/{kind}-v0"


def bot_episode(env: gym.Env, seed: int, noise: float) -> dict:
    """One episode of the bot taking a uniformly random action with probability ``noise`` per
    step (``noise=1``: the random policy; the bot is not consulted)."""
    from minigrid.utils.baby_ai_bot import BabyAIBot

    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    level = env.unwrapped.level_env
    bot = BabyAIBot(level) if noise < 1 else None
    images, dirs, acts, rews, terms, truncs = [obs["image"]], [obs["direction"]], [], [], [], []
    taken = None
    done = False
    while not done:
        suggested = None
        if bot is not None:
            try:
                suggested = bot.replan(taken)
            except Exception:  # the bot's plan broke after a random action: plan afresh from here
                bot = BabyAIBot(level)
                suggested = bot.replan()
        random = bot is None or rng.random() < noise
        a = int(rng.integers(env.action_space.n)) if random else int(suggested)
        obs, r, term, trunc, _ = env.step(a)
        taken = a
        images.append(obs["image"])
        dirs.append(obs["direction"])
        acts.append(a)
        rews.append(r)
        terms.append(term)
        truncs.append(trunc)
        done = term or trunc
    return dict(observations=dict(image=np.stack(images).astype(np.uint8), direction=np.asarray(dirs, np.int64)),
                actions=np.asarray(acts, np.int64), rewards=np.asarray(rews, np.float64),
                terminations=np.asarray(terms), truncations=np.asarray(truncs))


def level_episodes(level: str, kind: str, episodes: int, seed: int, medium_noise: float = MEDIUM_NOISE) -> list[dict]:
    """The ``episodes`` episodes of one dataset level (module docstring)."""
    if kind not in (*LEVELS, "ref"):
        raise ValueError(f"unknown dataset level {kind!r}; choose from {', '.join(LEVELS)}")
    env = gym.make("rl_seq/MiniGrid-v0", level=level)
    base = seed + _OFFSET[kind]
    if kind == "mixed":
        shares = [MIXED_SHARES[min(i * len(MIXED_SHARES) // episodes, len(MIXED_SHARES) - 1)] for i in range(episodes)]
    else:
        shares = [dict(optimal=0.0, ref=0.0, medium=medium_noise, random=1.0)[kind]] * episodes
    from rich.progress import track

    out = [bot_episode(env, base + i, s) for i, s in
           track(list(enumerate(shares)), description=f"{level} {kind}", transient=True)]
    env.close()
    return out


def make_minigrid_datasets(level: str, levels=("optimal", "medium", "mixed"), episodes: int = 1000,
                           medium_noise: float = MEDIUM_NOISE, ref_episodes: int = 100, seed: int = 0,
                           namespace: str = "minigrid") -> dict:
    """Make the dataset levels of one BabyAI level; returns and prints ``{kind: summary}``."""
    bad = [k for k in levels if k not in LEVELS]
    if bad or not levels:
        raise ValueError(f"unknown dataset level(s) {bad}; choose from {', '.join(LEVELS)}")
    levels = list(dict.fromkeys(levels))  # each made once
    for name, v, lo in (("episodes", episodes, 1), ("ref_episodes", ref_episodes, 1), ("seed", seed, 0)):
        if int(v) < lo:
            raise ValueError(f"{name} must be >= {lo}, got {v}")
    if not namespace or namespace.strip("/") != namespace or "//" in namespace:
        raise ValueError(f"namespace {namespace!r} must be one or more names joined by '/' (e.g. minigrid or "
                         "me/babyai): datasets become NAMESPACE/LEVEL/KIND-v0")
    if not 0.0 <= medium_noise <= 1.0:
        raise ValueError(f"medium_noise is a share of random actions in [0, 1], got {medium_noise}")
    from minari.data_collector import EpisodeBuffer

    from rl_seq.data.store import create_dataset
    probe = gym.make("rl_seq/MiniGrid-v0", level=level)  # unknown level, no minigrid: clear errors
    spec = probe.spec  # with level=... in its kwargs, so the dataset's env is this level
    from minigrid.envs.babyai.core.roomgrid_level import RoomGridLevel

    if not isinstance(probe.unwrapped.level_env.unwrapped, RoomGridLevel):
        raise ValueError(f"{level} has no BabyAI instructions, so the BabyAI bot cannot play it: choose a BabyAI "
                         "level (BabyAI-GoToRedBallGrey-v0, BabyAI-UnlockLocal-v0, BabyAI-KeyCorridorS3R1-v0, ...)")
    probe.close()
    ref = [float(e["rewards"].sum()) for e in level_episodes(level, "ref", ref_episodes, seed)]
    rand = [float(e["rewards"].sum()) for e in level_episodes(level, "random", ref_episodes, seed + 7)]
    ref_min, ref_max = float(np.mean(rand)), float(np.mean(ref))
    out = {}
    for kind in levels:
        eps = level_episodes(level, kind, episodes, seed, medium_noise)
        ds_id = dataset_id(level, kind, namespace)
        buffers = [EpisodeBuffer(id=i, observations=e["observations"], actions=e["actions"],
                                 rewards=list(e["rewards"]), terminations=list(e["terminations"]),
                                 truncations=list(e["truncations"])) for i, e in enumerate(eps)]
        noise = dict(optimal=0.0, medium=medium_noise, random=1.0).get(kind)
        meta = dict(level=level, kind=kind, random_action_share=noise if kind != "mixed" else list(MIXED_SHARES),
                    seed=seed, bot="minigrid.utils.baby_ai_bot.BabyAIBot")
        create_dataset(ds_id, buffers, metadata=dict(rl_seq_minigrid=meta), env=spec,
                       algorithm_name=f"BabyAIBot, random-action share {meta['random_action_share']}",
                       author="rl_seq", ref_min_score=ref_min, ref_max_score=ref_max,
                       description=f"D4RL-style {kind} level of {level} (mission text dropped), made by rl_seq")
        ret = float(np.mean([e["rewards"].sum() for e in eps]))
        out[kind] = dict(id=ds_id, episodes=len(eps), steps=int(sum(len(e["actions"]) for e in eps)),
                         mean_return=ret, normalized_score=(ret - ref_min) / max(ref_max - ref_min, 1e-8))
    from rl_seq.plot import print_table

    print_table(f"{dataset_id(level, 'KIND', namespace)}: random {ref_min:.3f}, bot {ref_max:.3f} (ref scores)",
                ["KIND", "episodes", "steps", "mean return", "normalised"],
                [[k, v["episodes"], v["steps"], v["mean_return"], v["normalized_score"]] for k, v in out.items()])
    return out
