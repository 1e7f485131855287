"""rl_seq: reinforcement-learning agents whose policies are sequence models.

Build an agent, train it, evaluate it (``tests/test_docs.py`` runs this example):

>>> import rl_seq
>>> agent = rl_seq.make_agent("dt", dataset="rl_seq/pointgoal/medium-v0", backbone={"d_model": 32, "n_layers": 1},
...                           warmup_steps=20, eval_episodes=0)
>>> result = agent.learn("rl_seq/pointgoal/medium-v0", steps=50)
>>> result["step"]
50
>>> agent.evaluate(episodes=4).to_dict()["episodes"]
4

Or train a run folder (metrics, checkpoints, final model, ``eval.json``), as ``rl-seq train`` does:

>>> import tempfile
>>> out = rl_seq.train("dt", dataset="rl_seq/pointgoal/medium-v0", out=tempfile.mkdtemp() + "/run",
...                    overrides=["steps=20", "eval_episodes=2", "backbone.n_layers=1"])
>>> sorted(out["last"])[:3]
['episodes', 'lengths', 'mean_length']
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


def train(algo, **kwargs):
    """Train a run folder: the library entry point ``rl-seq train`` calls
    (:func:`rl_seq.training.train`)."""
    from rl_seq.training import train as _train

    return _train(algo, **kwargs)


__all__ = ["make_agent", "load_agent", "train", "__version__"]
