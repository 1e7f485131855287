"""rl_seq: reinforcement-learning agents whose policies are sequence models.

    import rl_seq
    agent = rl_seq.make_agent("dt", dataset="rl_seq/pointgoal/medium-v0")
    agent.learn(steps=2000)
    print(agent.evaluate(episodes=10))
"""

from rl_seq import envs as _envs  # noqa: F401  (registers rl_seq/* Gymnasium envs)

__version__ = "0.1.0"


def make_agent(name, *args, **kwargs):
    """Build an agent by algorithm name (see ``rl_seq.agents.ALGOS``)."""
    from rl_seq.agents import make_agent as _make

    return _make(name, *args, **kwargs)


def load_agent(path):
    """Load an agent saved with ``agent.save(path)``."""
    from rl_seq.agents import load_agent as _load

    return _load(path)


__all__ = ["make_agent", "load_agent", "__version__"]
