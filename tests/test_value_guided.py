"""The value-guided Decision Transformer (vdt): n-step targets on hand-made windows, the
signs of its loss terms, its critic on hand-made data (termination vs truncation), acting and
save/load."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import rl_seq
from rl_seq.agents.bootstrap import n_step_targets
from rl_seq.data import Episodes

DATA = "rl_seq/pointgoal/medium-v0"
TINY = dict(backbone=dict(d_model=16, n_layers=1, dropout=0.0), batch_size=8, context=4, warmup_steps=1,
            eval_every=0, eval_episodes=0, log_every=10, threads=1)


def test_n_step_targets_stop_at_termination_and_bootstrap_after_truncation():
    """One window holding the end of a terminated episode, one the end of a truncated one: the
    final step (index 2) ends the n-step sums; its value counts only after a truncation."""
    g = 0.5
    rew = torch.tensor([[1.0, 2.0, 0.0, 4.0]] * 2)
    v = torch.tensor([[10.0, 20.0, 30.0, 40.0]] * 2)
    final = torch.tensor([[False, False, True, False]] * 2)
    terminal = torch.tensor([[False, False, True, False], [False, False, False, False]])
    valid = torch.ones(2, 4, dtype=torch.bool)
    y1, tr1 = n_step_targets(v, rew, final, terminal, valid, g, 1)
    assert torch.allclose(y1[0, :2], torch.tensor([1 + g * 20, 2.0]))  # terminated: no value after the end
    assert torch.allclose(y1[1, :2], torch.tensor([1 + g * 20, 2 + g * 30]))  # truncated: the final obs's value
    assert tr1.tolist() == [[True, True, False, False]] * 2  # final: no action; the last: no lookahead
    y2, tr2 = n_step_targets(v, rew, final, terminal, valid, g, 2)
    assert torch.allclose(y2[0, :2], torch.tensor([1 + g * 2, 2.0]))
    assert torch.allclose(y2[1, :2], torch.tensor([1 + g * 2 + g**2 * 30, 2 + g * 30]))
    assert tr2.tolist() == [[True, True, False, False]] * 2  # the episode ends inside both lookaheads
    no_end = torch.zeros(1, 4, dtype=torch.bool)
    y, tr = n_step_targets(torch.tensor([[10.0, 20, 30, 40]]), torch.tensor([[1.0, 2, 3, 4]]), no_end, no_end,
                           valid[:1], g, 5, clip_to_window=True)  # the window's last step bootstraps
    assert torch.allclose(y[0, :3], torch.tensor([1 + g * 2 + g**2 * 3 + g**3 * 40, 2 + g * 3 + g**2 * 40, 3 + g * 40]))
    assert tr.tolist() == [[True, True, True, False]]
    assert not n_step_targets(v[:1], rew[:1], no_end, no_end, valid[:1], g, 5)[1].any()  # unclipped: none fits
    padded = valid.clone()
    padded[:, 0] = False
    assert not n_step_targets(v, rew, final, terminal, padded, g, 1)[1][:, 0].any()  # padding never trains


def _batch(agent):
    from rl_seq.agents.bootstrap import with_final_steps
    from rl_seq.data import SegmentSampler, load_episodes

    aug, final, terminal = with_final_steps(load_episodes(DATA))
    sampler = SegmentSampler(aug, agent.config.context, seed=0, extra=dict(final=final, terminal=terminal))
    return agent.batch(sampler, 16)


def test_policy_term_moves_actions_up_the_critic_and_leaves_the_critic_alone():
    agent = rl_seq.make_agent("vdt", dataset=DATA, seed=0, **TINY)
    agent.prepare(10, rl_seq.data.load_episodes(DATA), None)
    b = _batch(agent)
    agent.model.eval()  # no dropout: the two losses differ by the critic term only

    def q_term():  # loss(η=1) - loss(η=0): the critic term alone
        agent.config.eta = 1.0
        with_q = agent.loss(agent.model, b)[0]
        agent.config.eta = 0.0
        return with_q - agent.loss(agent.model, b)[0]

    def q_of_policy():
        with torch.no_grad():
            pred = agent.model.action_outputs(agent.model(b["fields"], b["episode_start"]))
            obs = agent.model.backbone.tokenizer.normalize_observations(b["obs"].float())
            return agent.model.critic(obs, pred)[0].mean()

    agent.model.zero_grad()
    q_term().backward()
    assert all(p.grad is None or not p.grad.any() for p in agent.model.critic.parameters())
    actor = [p for p in agent.model.actor().parameters() if p.grad is not None]
    assert actor and any(p.grad.any() for p in actor)
    before = q_of_policy()
    with torch.no_grad():
        for p in actor:
            p -= 1e-2 * p.grad
    assert q_of_policy() > before


def _chain(terminated: bool) -> Episodes:
    """Episodes of 4 steps, reward 1 a step. Terminated: the observation is the step's one-hot
    (Q(s_t) = Σ_{k<4-t} γ^k); truncated: it alternates between two states, and the final one is
    seen in the data, so Q = 1 / (1 - γ) everywhere."""
    eps = []
    for _ in range(8):
        idx = [0, 1, 2, 3, 0] if terminated else np.arange(5) % 2
        eps.append(dict(observations=np.eye(4, dtype=np.float32)[idx], actions=np.zeros((4, 1), np.float32),
                        rewards=np.ones(4, np.float32), terminations=np.array([0, 0, 0, terminated], bool),
                        truncations=np.array([0, 0, 0, not terminated], bool)))
    return Episodes.from_episode_list(eps, gym.spaces.Box(0, 1, (4,)), gym.spaces.Box(-1, 1, (1,)))


@pytest.mark.parametrize("terminated", [True, False])
def test_critic_learns_the_discounted_return_termination_vs_truncation(terminated):
    g = 0.5
    data = _chain(terminated)
    agent = rl_seq.make_agent("vdt", dataset=data, seed=1, gamma=g, tau=0.1, critic_lr=1e-2, eta=0.0,
                              **{**TINY, "context": 2, "batch_size": 16})
    agent.learn(data, steps=300)
    obs = agent.model.backbone.tokenizer.normalize_observations(torch.as_tensor(data.observations[:4]))
    q = agent.model.critic(obs, torch.zeros(4, 1)).detach().numpy()
    expected = [sum(g**k for k in range(4 - t)) for t in range(4)] if terminated else [1 / (1 - g)] * 4
    assert np.allclose(q, [expected] * 2, atol=0.1), (q, expected)


def test_trains_acts_and_round_trips(tmp_path):
    agent = rl_seq.make_agent("vdt", dataset=DATA, seed=0, **{**TINY, "eval_episodes": 2})
    out = agent.learn(DATA, steps=4)
    assert np.isfinite(out["train"]["loss"]) and out["last"]["episodes"] == 2
    loaded = rl_seq.load_agent(agent.save(tmp_path / "m"))
    assert loaded.evaluate(episodes=2, seed=3).returns == agent.evaluate(episodes=2, seed=3).returns
    assert torch.equal(loaded.model.reward_scale, agent.model.reward_scale)
    assert all(torch.equal(p, q) for p, q in zip(loaded.model.critic.parameters(), agent.model.critic.parameters()))


def test_refuses_discrete_actions():
    with pytest.raises(TypeError, match="use dt for discrete actions"):
        rl_seq.make_agent("vdt", (gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(4)), **TINY)
