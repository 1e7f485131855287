"""Speed of Hugging Face's ``DecisionTransformerModel`` at the reference DT size, for
``scripts/bench_peers.py`` (runs in the peers' virtualenv; prints one JSON line).

- train step: forward + masked MSE + backward + clip 0.25 + AdamW, batch 64, K=20, median;
- acting: the usual HF rollout (keep the history, left-pad the last K steps, run the whole
  window every step; no KV cache), batch 1, ms per step at each K.

    python scripts/peers/hf_dt_speed.py --state-dim 11 --act-dim 3 --ks 20,100
"""

import argparse
import json
import statistics
import time

import torch
import transformers
from transformers import DecisionTransformerConfig, DecisionTransformerModel


def model_for(S: int, A: int, K: int) -> DecisionTransformerModel:
    cfg = DecisionTransformerConfig(state_dim=S, act_dim=A, hidden_size=128, n_layer=3, n_head=1, n_inner=512,
                                    activation_function="relu", resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1,
                                    max_ep_len=4096, max_length=K, n_positions=max(1024, 3 * K), action_tanh=True,
                                    bos_token_id=None, eos_token_id=None)
    return DecisionTransformerModel(cfg)


def train_step_s(S: int, A: int, K: int = 20, B: int = 64, n: int = 30) -> float:
    torch.manual_seed(0)
    m = model_for(S, A, K).train()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4, weight_decay=1e-4)
    s, a, r = torch.randn(B, K, S), torch.rand(B, K, A) * 2 - 1, torch.randn(B, K, 1)
    t, mask = torch.randint(0, 900, (B, 1)) + torch.arange(K), torch.ones(B, K, dtype=torch.long)
    times = []
    for i in range(n + 5):
        t0 = time.perf_counter()
        out = m(states=s, actions=a, rewards=None, returns_to_go=r, timesteps=t, attention_mask=mask)
        loss = ((out.action_preds - a) ** 2)[mask > 0].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 0.25)
        opt.step()
        if i >= 5:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


@torch.no_grad()
def act_ms(S: int, A: int, K: int, steps: int = 300) -> float:
    torch.manual_seed(0)
    m = model_for(S, A, K).eval()
    states, actions = torch.randn(1, S), torch.zeros(0, A)
    rtg, ts = torch.full((1, 1), 3.6), torch.zeros(1, dtype=torch.long)
    times = []
    for step in range(steps):
        t0 = time.perf_counter()
        actions = torch.cat([actions, torch.zeros(1, A)])
        n = min(K, states.shape[0])
        pad = K - n

        def window(x, n=n, pad=pad):
            return torch.cat([torch.zeros((pad, *x.shape[1:]), dtype=x.dtype), x[-n:]])[None]

        mask = torch.cat([torch.zeros(pad), torch.ones(n)]).long()[None]
        out = m(states=window(states), actions=window(actions), rewards=None, returns_to_go=window(rtg),
                timesteps=window(ts), attention_mask=mask)
        actions[-1] = out.action_preds[0, -1]
        times.append(time.perf_counter() - t0)
        states = torch.cat([states, torch.randn(1, S)])
        rtg = torch.cat([rtg, rtg[-1:] - 1e-3])
        ts = torch.cat([ts, torch.tensor([step + 1])])
    return 1e3 * statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--state-dim", type=int, default=11)
    p.add_argument("--act-dim", type=int, default=3)
    p.add_argument("--ks", default="20,100")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    ks = [int(k) for k in a.ks.split(",")]
    print(json.dumps(dict(lib="transformers", version=transformers.__version__, threads=a.threads,
                          train_step_s=train_step_s(a.state_dim, a.act_dim),
                          act_ms_per_step={str(k): act_ms(a.state_dim, a.act_dim, k) for k in ks})), flush=True)


if __name__ == "__main__":
    main()
