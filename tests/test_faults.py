"""Faults and bad input: each ends in one clear message (exit code 2 from the CLI) and loses
nothing. (Issue #15's catalogue; more cases live in test_runs.py and test_data.py.)"""

import json
import os
import signal
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import rl_seq
from rl_seq.cli import main
from rl_seq.runs import CheckpointError, load_checkpoint

DATA = "rl_seq/pointgoal/medium-v0"
TINY = ["--set", "backbone.d_model=16", "--set", "backbone.n_layers=1", "--set", "batch_size=8",
        "--set", "context=5", "--set", "warmup_steps=10", "--set", "eval_episodes=2", "--set", "log_every=5",
        "--set", "eval_every=0", "--set", "threads=1"]


def train_argv(out, steps, *extra):
    return ["train", "dt", "--dataset", DATA, "--steps", str(steps), "--out", str(out), *TINY, *extra]


def weights(run):
    return load_file(str(run / "model" / "model.safetensors"))


def test_sigkill_loses_only_the_steps_since_the_checkpoint(tmp_path):
    """A killed run (no handler can run) resumes from its last checkpoint to the same weights
    as a run never stopped; the kill also frees the run folder's lock."""
    assert main(train_argv(tmp_path / "full", 60, "--set", "checkpoint_every=10")) == 0
    part = tmp_path / "part"
    argv = [sys.executable, "-m", "rl_seq", *train_argv(part, 60, "--set", "checkpoint_every=10")]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    ckpt = part / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    while time.time() < deadline and not (ckpt.exists() and load_checkpoint(ckpt)["step"] >= 10):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step = load_checkpoint(ckpt)["step"]
    assert 10 <= step < 60 and not (part / "model").exists()
    assert main(train_argv(part, 60, "--set", "checkpoint_every=10", "--resume")) == 0
    a, b = weights(tmp_path / "full"), weights(part)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_second_writer_is_refused_with_the_first_ones_pid(tmp_path, capsys):
    out = tmp_path / "r"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from rl_seq.runs import Run; r = Run(sys.argv[1], {}); print('ok', flush=True); "
        "time.sleep(60)"), str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ok"
        assert main(train_argv(out, 5)) == 2
        err = capsys.readouterr().err
        assert f"in use by process {holder.pid}" in err and "another --out" in err
    finally:
        holder.kill()
        holder.wait()
    assert not (out / "metrics.jsonl").exists()  # the refused run wrote nothing


def test_resume_of_a_folder_without_a_checkpoint_is_refused(tmp_path, capsys):
    assert main(train_argv(tmp_path / "never-ran", 5, "--resume")) == 2
    assert "holds no checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "never-ran").exists()


def test_random_bytes_checkpoint_is_reported_without_unsafe_advice(tmp_path):
    p = tmp_path / "last.pt"
    p.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(p)
    assert "corrupt or truncated" in str(e.value) and "weights_only=False" not in str(e.value)


def test_malformed_yaml_names_the_file(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("lr: [1e-4\nsteps: 10\n")
    assert main(train_argv(tmp_path / "r", 5, "--config", str(cfg))) == 2
    err = capsys.readouterr().err
    assert "bad.yaml is not valid YAML" in err and "Traceback" not in err


def test_unregistered_env_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "lstm", "--env", "NoSuchEnv-v9", "--steps", "10", "--out", str(tmp_path / "r")]) == 2
    assert "NoSuchEnv" in capsys.readouterr().err


@pytest.fixture(scope="module")
def dt_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dt") / "run"
    assert main(train_argv(out, 10)) == 0
    return out


@pytest.mark.parametrize("argv,needle", [
    (["--episodes", "0"], "episodes must be >= 1"),
    (["--seed", "-1"], "seed (of the first evaluation episode) must be >= 0"),
    (["--target-return", "nan"], "finite number"),
    (["--target-return", "inf"], "finite number"),
])
def test_bad_eval_arguments(dt_run, argv, needle, capsys):
    before = (dt_run / "eval.json").read_text()
    assert main(["eval", str(dt_run), *argv, "--json"]) == 2
    assert needle in capsys.readouterr().err
    assert (dt_run / "eval.json").read_text() == before  # nothing written


def test_target_return_on_a_q_transformer_is_refused(tmp_path, capsys):
    out = tmp_path / "qt"
    assert main(["train", "qt", "--dataset", DATA, "--steps", "3", "--out", str(out), *TINY]) == 0
    assert main(["eval", str(out), "--target-return", "10"]) == 2
    assert "'target_return' is not an acting setting of qt" in capsys.readouterr().err


def test_nan_observation_is_refused_and_leaves_the_state_as_it_was(dt_run):
    agent = rl_seq.load_agent(dt_run / "model")
    obs = np.random.default_rng(0).uniform(-1, 1, (2, 4)).astype(np.float32)
    _, s1 = agent.predict(obs, None, np.ones(2, bool))
    _, s2 = agent.predict(obs, None, np.ones(2, bool))
    bad = obs.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"env\(s\) \[1\] holds NaN"):
        agent.predict(bad, s1, np.zeros(2, bool), rewards=np.zeros(2))
    a1, _ = agent.predict(obs, s1, np.zeros(2, bool), rewards=np.zeros(2))
    a2, _ = agent.predict(obs, s2, np.zeros(2, bool), rewards=np.zeros(2))
    assert np.array_equal(a1, a2) and np.isfinite(a1).all()


def test_nan_target_return_in_the_config_is_refused(capsys, tmp_path):
    assert main(train_argv(tmp_path / "r", 5, "--set", "target_returns=[.nan]")) == 2
    assert "finite" in capsys.readouterr().err


def test_interrupted_dataset_creation_leaves_nothing_behind(store, monkeypatch):
    """Ctrl-C while a built-in dataset is made on first use: the store holds no broken entry,
    and the next use makes it afresh."""
    import minari

    from rl_seq.data import load_episodes

    real = minari.create_dataset_from_buffers

    def interrupted(*a, **k):
        real(*a, **k)  # every file written, then Ctrl-C before the dataset is in place
        raise KeyboardInterrupt

    monkeypatch.setattr(minari, "create_dataset_from_buffers", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_episodes(DATA)
    monkeypatch.setattr(minari, "create_dataset_from_buffers", real)
    assert DATA not in minari.list_local_datasets()
    assert [p.name for p in store.iterdir() if p.name.startswith(".rl_seq-tmp")] == []  # no temp store left
    assert load_episodes(DATA).num_episodes == 200
    assert DATA in minari.list_local_datasets()


def test_actions_outside_the_action_space_are_refused(store, capsys, tmp_path):
    from conftest import make_minari, point_episode

    eps = [point_episode(30, seed=i) for i in range(3)]
    eps[1]["actions"][4] = [1.7, 0.0]  # outside the [-1, 1] box
    make_minari("test/outside-v0", eps)
    assert main(["train", "dt", "--dataset", "test/outside-v0", "--steps", "3", "--out", str(tmp_path / "r"),
                 *TINY]) == 2
    err = capsys.readouterr().err
    assert "1 action(s) of test/outside-v0 lie outside its action space" in err and "clip" in err


def test_a_config_file_for_another_algorithm_is_refused(tmp_path, capsys):
    assert main(train_argv(tmp_path / "r", 5, "--config", "configs/qt/pointgoal.yaml")) == 2
    assert "config for 'qt', not 'dt'" in capsys.readouterr().err


def test_online_training_with_a_dataset_says_it_reads_none(tmp_path, capsys):
    assert main(["train", "lstm", "--env", "CartPole-v1", "--dataset", DATA, "--out", str(tmp_path / "r")]) == 2
    assert "reads no dataset" in capsys.readouterr().err


def test_multidiscrete_actions_are_refused_before_ppo_starts():
    import gymnasium as gym

    with pytest.raises(TypeError, match="Discrete or Box"):
        rl_seq.make_agent("lstm", (gym.spaces.Box(-1, 1, (3,)), gym.spaces.MultiDiscrete([2, 3])))


def test_a_failed_checkpoint_write_leaves_the_old_one_and_no_temp_file(tmp_path, monkeypatch):
    from rl_seq.runs import save_checkpoint

    p = tmp_path / "last.pt"
    save_checkpoint(p, {"step": 1})

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(p, {"step": 2})
    assert load_checkpoint(p)["step"] == 1 and [f.name for f in tmp_path.iterdir()] == ["last.pt"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_online_resume_restores_normalisation_and_evaluations(tmp_path, monkeypatch, sig):
    """PPO: an interrupted run's checkpoint holds the observation/return statistics and the
    last/best evaluations, and --resume takes them up (env internals restart from a reset)."""
    from rl_seq.agents.ppo import PPOAgent, RunningMeanStd

    out = tmp_path / "ppo"
    argv = ["train", "lstm", "--env", "rl_seq/TMaze-v0", "--steps", "2048", "--out", str(out),
            "--set", "env_kwargs.corridor_length=2", "--set", "n_envs=2", "--set", "n_steps=64", "--set", "seq_len=32",
            "--set", "n_epochs=4", "--set", "n_minibatches=4",  # 4 sequences of 32: the cheap update
            "--set", "norm_obs=true", "--set", "norm_reward=true", "--set", "eval_every=256",
            "--set", "eval_episodes=2", "--set", "checkpoint_every=0"]
    real, calls = PPOAgent.collect, {"n": 0}

    def collect(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 5:
            os.kill(os.getpid(), sig)
        return real(self, *a, **k)

    monkeypatch.setattr(PPOAgent, "collect", collect)
    assert main(argv) == 130
    monkeypatch.setattr(PPOAgent, "collect", real)
    ck = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ck["step"] == 5 * 128 and abs(ck["obs_rms"]["count"] - 5 * 128) < 1e-3
    assert ck["ret_rms"]["count"] > 0 and json.loads(ck["evals"])["last"]["step"] == 512
    loaded, real_load = [], RunningMeanStd.load_state_dict
    monkeypatch.setattr(RunningMeanStd, "load_state_dict", lambda self, s: (loaded.append(s), real_load(self, s)))
    assert main([*argv, "--resume"]) == 0
    assert [s["count"] for s in loaded] == [ck["obs_rms"]["count"], ck["ret_rms"]["count"]]
    steps = [r["step"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
             if r["kind"] == "train"]
    assert steps == sorted(set(steps)) and steps[-1] == 2048  # continuous, nothing logged twice


# -- the catalogue: user errors end in exit code 2, one message naming the problem and the fix,
# -- no traceback, and nothing written ----------------------------------------------------------
LSTM = ["train", "lstm", "--env", "CartPole-v1", "--steps", "256"]
CATALOGUE = [
    ("unknown-algo", ["train", "nosuch", "--dataset", DATA], "unknown algorithm 'nosuch'; choose one of dt"),
    ("unknown-dataset", ["train", "dt", "--dataset", "nosuch/x-v0"], "rl-seq datasets download nosuch/x-v0"),
    ("unknown-mixer", ["train", "dt", "--dataset", DATA, "--backbone", "nosuch"], "unknown mixer 'nosuch'; choose"),
    ("context-longer-than-every-episode", ["train", "dt", "--dataset", DATA, "--set", "context=5000"],
     "shorter than the context K=5000 (longest: 50 steps); lower the context (--set context=50)"),
    ("missing-config-file", ["train", "dt", "--dataset", DATA, "--config", "nosuch.yaml"],
     "config file nosuch.yaml does not exist; the shipped ones are configs/ALGO/TASK.yaml"),
    ("eval-env-spaces-differ", ["train", "dt", "--dataset", DATA, "--env", "CartPole-v1"],
     "does not match the dataset's"),
    ("misspelt-key", ["train", "dt", "--dataset", DATA, "--set", "lrr=1e-3"], "did you mean 'lr'?"),
    ("wrong-type", ["train", "dt", "--dataset", DATA, "--set", "steps=abc"], "steps must be int"),
    ("zero-steps", ["train", "dt", "--dataset", DATA, "--steps", "0"], "steps must be >= 1"),
    ("override-without-value", ["train", "dt", "--dataset", DATA, "--set", "lr"], "must look like key=value"),
    ("bad-device", ["train", "dt", "--dataset", DATA, "--set", "device=tpu"], "device must be one of auto, cpu, cuda"),
    ("segment-below-context", ["train", "dt", "--dataset", DATA, "--set", "segment=3", "--set", "context=5"],
     "segment must be >= context"),
    ("online-without-env", ["train", "lstm"], "give --env ENV_ID"),
    ("offline-without-dataset", ["train", "dt"], "give --dataset ID"),
    ("ppo-seq-len", [*LSTM, "--set", "seq_len=30"], "seq_len=30 must divide n_steps=128"),
    ("ppo-minibatches-of-a-small-rollout", [*LSTM, "--set", "n_envs=2", "--set", "n_steps=64"],
     "must divide the rollout's 2 sequences (n_envs·n_steps/seq_len = 2·64/64): --set n_minibatches=2"),
    ("ppo-vectorization", [*LSTM, "--set", "vectorization=threads"], "vectorization must be one of sync, async"),
    ("ppo-critic", [*LSTM, "--set", "critic=both"], "critic must be one of shared, separate"),
    ("popgym-id-without-module", ["train", "lstm", "--env", "popgym-RepeatPreviousEasy-v0"],
     "--env popgym:popgym-RepeatPreviousEasy-v0"),
    ("init-is-odt-only", ["train", "ds4", "--init", "runs/x", "--env", "Hopper-v5"], "rl-seq train odt --init runs/x"),
    ("dataset-info-unknown", ["datasets", "info", "nosuch/x-v0"], "rl-seq datasets download nosuch/x-v0"),
    ("dataset-make-unknown-env", ["datasets", "make", "NoSuch-v0", "--name", "t/x"], "NoSuch"),
    ("plot-not-a-run", ["plot", "nosuch-run"], "is it a run folder?"),
    ("eval-not-a-run", ["eval", "nosuch-run"], "holds no saved agent"),
    # the cases issue #37 listed, each with its neighbours
    ("no-layers", ["train", "dt", "--dataset", DATA, "--set", "backbone.n_layers=0"], "backbone.n_layers must be >= 1"),
    ("no-envs", [*LSTM, "--set", "n_envs=0"], "n_envs must be >= 1"),
    ("empty-batch", ["train", "dt", "--dataset", DATA, "--set", "batch_size=0"], "batch_size must be >= 1"),
    ("negative-lr", ["train", "dt", "--dataset", DATA, "--set", "lr=-1"], "lr must be > 0, got -1.0"),
    ("misspelt-builtin-dataset", ["train", "dt", "--dataset", "rl_seq/pointgoal/medim-v0"],
     "did you mean 'rl_seq/pointgoal/medium-v0'?"),
    ("misspelt-env", ["train", "lstm", "--env", "CartPol-v1"], "did you mean CartPole-v1"),
    ("misspelt-env-offline-eval", ["train", "dt", "--dataset", DATA, "--env", "rl_seq/PointGoal-v9"],
     "did you mean rl_seq/PointGoal-v0"),
    ("cuda-on-a-cpu-build", ["train", "dt", "--dataset", DATA, "--set", "device=cuda"], "--set device=cpu"),
    ("cuda-online", [*LSTM, "--set", "device=cuda"], "--set device=cpu"),
    ("tensorboard-not-a-bool", ["train", "dt", "--dataset", DATA, "--set", "tensorboard=maybe"],
     "tensorboard must be bool"),
    # mixer options: each mixer refuses what it cannot build, before the run folder
    ("agalite-eta", ["train", "relit", "--env", "CartPole-v1", "--set", "backbone.mixer_options.eta=0"],
     "eta (the feature expansion) must be >= 1"),
    ("agalite-r", ["train", "relit", "--env", "CartPole-v1", "--set", "backbone.mixer_options.r=0"],
     "r (the oscillating components) must be >= 1"),
    ("agalite-chunk-0", ["train", "relit", "--env", "CartPole-v1", "--set", "backbone.mixer_options.chunk=0"],
     "chunk must be in [1, 16]"),
    ("galite-chunk-17", ["train", "relit", "--env", "CartPole-v1", "--backbone", "linear",
                         "--set", "backbone.mixer_options.chunk=17"], "chunk must be in [1, 16]"),
    ("s4d-state-size", ["train", "ds4", "--dataset", DATA, "--set", "context=10",
                        "--set", "backbone.mixer_options.state_size=1"], "state_size must be >= 2"),
    ("s4d-dt", ["train", "ds4", "--dataset", DATA, "--set", "context=10", "--set", "backbone.mixer_options.dt_min=0"],
     "0 < dt_min <= dt_max"),
    ("xl-memory", ["train", "gtrxl", "--env", "CartPole-v1", "--set", "backbone.mixer_options.memory=0"],
     "memory must be >= 1"),
    ("conv-kernel", ["train", "dc", "--dataset", DATA, "--set", "backbone.mixer_options.kernel_size=0"],
     "kernel_size must be >= 1"),
    ("attention-window", ["train", "dt", "--dataset", DATA, "--set", "backbone.mixer_options.window=0"],
     "window must be >= 1"),
    ("unknown-mixer-option", ["train", "dt", "--dataset", DATA, "--set", "backbone.mixer_options.nosuch=1"],
     "bad option for mixer 'attention'"),
]
# every range of every config field, one step outside it (the value next to the valid ones)
RANGES = [
    (algo, key, value, needle) for algo, cases in {
        "dt": [("seed", -1, "seed must be >= 0"), ("eval_every", -1, "eval_every must be >= 0"),
               ("eval_episodes", -1, "eval_episodes must be >= 0"), ("log_every", 0, "log_every must be >= 1"),
               ("checkpoint_every", -1, "checkpoint_every must be >= 0"), ("threads", -1, "threads must be >= 0"),
               ("lr", 0, "lr must be > 0"), ("lr", ".nan", "lr must be a finite number"),
               ("lr", ".inf", "lr must be a finite number"), ("weight_decay", -0.1, "weight_decay must be >= 0"),
               ("max_timestep", 0, "max_timestep must be >= 1"), ("context", 0, "context must be >= 1"),
               ("warmup_steps", -1, "warmup_steps must be >= 0"), ("grad_clip", 0, "grad_clip must be > 0"),
               ("return_scale", 0, "return_scale must be > 0"), ("short_episodes", "cut", "short_episodes must be one"),
               ("acting", "fast", "acting must be one of cached, window"), ("amp", "fp16", "amp must be one of"),
               ("compile", "maybe", "compile must be one of"), ("ref_min_score", 5, None),
               ("backbone.d_model", 0, "d_model must be >= 1"), ("backbone.n_heads", 0, "n_heads must be >= 1"),
               ("backbone.n_heads", 3, "not divisible by n_heads=3"),
               ("backbone.mlp_ratio", 0, "mlp_ratio must be >= 1"),
               ("backbone.dropout", 1.0, "dropout must be in [0, 1)"), ("backbone.dropout", -0.1, "dropout must be in"),
               ("backbone.activation", "tanh", "activation must be one of gelu, relu"),
               ("backbone.block", "gru", "block must be one of pre_ln, gtrxl"),
               ("backbone.init", "xavier", "init must be one of torch, gpt2"),
               ("backbone.backend", "triton", "backend must be one of torch, reference, accelerated"),
               ("backbone.n_layers", -1, "n_layers must be >= 1"), ("batch_size", -8, "batch_size must be >= 1")],
        "qt": [("n_bins", 1, "n_bins must be >= 2"), ("n_step", 0, "n_step must be >= 1"),
               ("gamma", 1, "gamma must be in (0, 1)"), ("gamma", 0, "gamma must be in (0, 1)"),
               ("tau", 0, "tau must be in (0, 1]"), ("tau", 1.5, "tau must be in (0, 1]"),
               ("support", -0.1, "support must be in [0, 1]"), ("support", 1.1, "support must be in [0, 1]"),
               ("temperature", 0, "temperature must be > 0"), ("conservative_weight", -1, "must be >= 0"),
               ("heads", "all", "heads must be one of"), ("decode", "best", "decode must be one of"),
               ("reward_floor", "one", "reward_floor must be one of"), ("context", 0, "context must be >= 1")],
        "vdt": [("eta", -1, "eta must be >= 0"), ("gamma", 1, "gamma must be in (0, 1)"),
                ("gamma", 0, "gamma must be in (0, 1)"), ("n_step", 0, "n_step must be >= 1"),
                ("tau", 0, "tau must be in (0, 1]"), ("tau", 1.5, "tau must be in (0, 1]"),
                ("critic_lr", 0, "critic_lr must be > 0"), ("critic_hidden", 0, "critic_hidden must be >= 1"),
                ("context", 0, "context must be >= 1")],
        "odt": [("online_steps", -1, "online_steps must be >= 0"), ("buffer_size", 0, "buffer_size must be >= 1"),
                ("updates_per_trajectory", -1, "must be >= 0"), ("online_target_scale", 0.5, "must be >= 1"),
                ("init_temperature", 0, "init_temperature must be > 0"), ("temperature_lr", 0, "must be > 0"),
                ("online_batch_size", 0, "online_batch_size must be >= 1")],
        "lstm": [("n_steps", 0, "n_steps must be >= 1"), ("seq_len", 0, "seq_len must be >= 1"),
                 ("n_epochs", 0, "n_epochs must be >= 1"), ("n_minibatches", 0, "n_minibatches=0 must divide"),
                 ("lr", 0, "lr must be > 0"), ("gamma", 0, "gamma must be in (0, 1]"),
                 ("gamma", 1.5, "gamma must be in (0, 1]"), ("gae_lambda", 1.5, "gae_lambda must be in [0, 1]"),
                 ("clip_coef", 0, "clip_coef must be > 0"), ("vf_coef", -1, "vf_coef must be >= 0"),
                 ("ent_coef", -0.01, "ent_coef must be >= 0"), ("max_grad_norm", 0, "max_grad_norm must be > 0"),
                 ("target_kl", 0, "target_kl must be > 0"), ("max_timestep", -1, "max_timestep must be >= 0"),
                 ("start_states", "fresh", "start_states must be one of"), ("layout", "obs,prev_act", "one token")],
    }.items() for key, value, needle in cases]
SOURCE = {"dt": ["--dataset", DATA], "qt": ["--dataset", DATA], "vdt": ["--dataset", DATA], "odt": ["--dataset", DATA],
          "lstm": ["--env", "CartPole-v1"]}
REF_ORDER = "ref_min_score (5.0) must be below ref_max_score (1.0)"
CATALOGUE += [(f"{algo}-{key}={value}", ["train", algo, *SOURCE[algo], "--set", f"{key}={value}",
                                         *(["--set", "ref_max_score=1"] if key == "ref_min_score" else [])],
               needle or REF_ORDER) for algo, key, value, needle in RANGES]


@pytest.mark.parametrize("argv,needle", [c[1:] for c in CATALOGUE], ids=[c[0] for c in CATALOGUE])
def test_user_errors_exit_2_with_the_fix_and_write_nothing(argv, needle, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # relative paths (runs/..., plots) land here
    for env_id in [k for k in gym.registry if k.startswith("popgym-")]:  # unregistered, as in a new process
        monkeypatch.delitem(gym.registry, env_id)
    assert main([*argv, *(["--out", "r"] if argv[0] == "train" else [])]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and err.count("error:") == 1
    assert list(tmp_path.iterdir()) == []  # no run folder, no half-made file


def test_a_config_file_that_is_not_a_mapping_is_refused(tmp_path, capsys):
    cfg = tmp_path / "list.yaml"
    cfg.write_text("- lr\n- 1e-4\n")
    assert main(train_argv(tmp_path / "r", 5, "--config", str(cfg))) == 2
    assert "a config file must be a mapping" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_short_episodes_error_policy_names_the_choices(store, capsys, tmp_path):
    from conftest import make_minari, point_episode

    make_minari("test/short-v0", [point_episode(30, seed=0), point_episode(3, seed=1)])
    assert main(["train", "dt", "--dataset", "test/short-v0", "--steps", "3", "--out", str(tmp_path / "r"), *TINY,
                 "--set", "short_episodes=error"]) == 2
    err = capsys.readouterr().err
    assert "1 episode(s) of test/short-v0 are shorter than the context K=5" in err and "'pad'" in err
    assert main(["train", "dt", "--dataset", "test/short-v0", "--steps", "3", "--out", str(tmp_path / "r"),
                 *TINY]) == 0  # the default pads them


@pytest.fixture(scope="module")
def qt_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("qt") / "run"
    assert main(["train", "qt", "--dataset", DATA, "--steps", "3", "--out", str(out), *TINY]) == 0
    return out


@pytest.mark.parametrize("argv,needle", [
    (["--acting", "window"], "'mode' is not an acting setting of qt"),
    (["--env", "CartPole-v1"], "does not match the agent's"),
    (["--env", "NoSuch-v0"], "NoSuch"),
    (["--set", "n_bins=16"], "'n_bins' is not an acting setting of qt; its acting settings are decode, "
                             "temperature, support (the rest was fixed by training"),
    (["--set", "decode=soft"], "needs the behaviour head, which this model was not trained with"),
    (["--set", "temperature=0"], "temperature must be > 0, got 0.0"),
    (["--set", "temperature=.inf"], "temperature must be a finite number"),
    (["--set", "temperature=hot"], "temperature must be float"),
    (["--set", "support=2"], "support must be in [0, 1]"),
    (["--set", "decode=best"], "decode must be one of greedy, soft"),
])
def test_bad_eval_of_a_q_transformer(qt_run, argv, needle, capsys):
    before = (qt_run / "eval.json").read_text()
    assert main(["eval", str(qt_run), *argv]) == 2
    assert needle in capsys.readouterr().err
    assert (qt_run / "eval.json").read_text() == before


def test_eval_sets_acting_settings_of_a_q_transformer(tmp_path, capsys):
    """``rl-seq eval --set`` changes how a trained qt acts (from the soft decoding it was trained
    with to greedy, and to a behaviour-support constraint) without touching the saved run: the
    same seeds give other returns, and the defaults give the same returns again."""
    out = tmp_path / "run"
    assert main(["train", "qt", "--dataset", DATA, "--steps", "20", "--out", str(out), *TINY,
                 "--set", "decode=soft"]) == 0
    config, report = (out / "model" / "config.yaml").read_text(), (out / "eval.json").read_text()

    def returns(*argv):
        capsys.readouterr()
        assert main(["eval", str(out), "--episodes", "3", *argv, "--json"]) == 0
        return json.loads(capsys.readouterr().out)["returns"]

    soft = returns()
    assert returns("--set", "decode=greedy") != soft
    assert returns("--set", "support=0.3", "--set", "decode=greedy") != returns("--set", "decode=greedy")
    assert returns() == soft
    assert (out / "model" / "config.yaml").read_text() == config and (out / "eval.json").read_text() == report


def test_online_dt_from_a_q_transformer_is_refused(qt_run, tmp_path, capsys):
    assert main(["train", "odt", "--init", str(qt_run), "--online-steps", "100", "--out",
                 str(tmp_path / "ft")]) == 2
    assert "--init takes a return-conditioned run" in capsys.readouterr().err and not (tmp_path / "ft").exists()


@pytest.mark.parametrize("damage,needle", [
    ("truncate-weights", "is corrupt or truncated"),
    ("unknown-algo", "names algorithm 'dt9', which this rl_seq does not have"),
    ("garbage-config", "is not a saved agent's config"),
    ("config-more-layers", "missing from the weights: backbone.blocks.1."),
    ("config-wider", "shapes differ (saved vs model): "),
    ("older-layout", "not in the model: backbone.old_name"),
    ("bad-value-in-config", "lr must be > 0"),
])
def test_a_damaged_saved_agent_is_reported(dt_run, tmp_path, damage, needle, capsys):
    """A saved agent whose files are damaged, whose config no longer matches its weights, or
    whose weights come from another layout: one message naming what differs, and the fix."""
    import shutil

    from safetensors.torch import save_file

    model = tmp_path / "model"
    shutil.copytree(dt_run / "model", model)
    cfg, w = model / "config.yaml", model / "model.safetensors"
    if damage == "truncate-weights":
        w.write_bytes(w.read_bytes()[:100])
    elif damage == "unknown-algo":
        cfg.write_text(cfg.read_text().replace("algo: dt", "algo: dt9", 1))
    elif damage == "config-more-layers":
        cfg.write_text(cfg.read_text().replace("n_layers: 1", "n_layers: 2", 1))
    elif damage == "config-wider":
        cfg.write_text(cfg.read_text().replace("d_model: 16", "d_model: 32", 1))
    elif damage == "older-layout":
        state = load_file(str(w))
        state["backbone.old_name"] = state.pop(next(iter(state)))
        save_file(state, str(w))
    elif damage == "bad-value-in-config":
        cfg.write_text(cfg.read_text().replace("lr: 0.0001", "lr: -1", 1))
    else:
        cfg.write_text("just: text\n")
    assert main(["eval", str(model)]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and err.count("error:") == 1


def test_a_truncated_checkpoint_on_resume_is_reported_and_kept(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(train_argv(out, 10, "--set", "checkpoint_every=5")) == 0
    ckpt = out / "checkpoints" / "last.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:500])
    cut = ckpt.read_bytes()
    assert main(train_argv(out, 20, "--set", "checkpoint_every=5", "--resume")) == 2
    assert "corrupt or truncated" in capsys.readouterr().err
    assert ckpt.read_bytes() == cut  # left for the user to restore, not overwritten


def test_diverging_training_stops_with_advice_and_no_nan_checkpoint(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(train_argv(out, 30, "--set", "lr=1e12", "--set", "log_every=1", "--set", "checkpoint_every=10")) == 2
    err = capsys.readouterr().err
    assert "non-finite training metrics at step" in err and "lower the learning rate" in err
    assert not (out / "checkpoints" / "last.pt").exists() and not (out / "model").exists()


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no saved agent"):
        main(["--debug", "eval", str(tmp_path)])


@pytest.mark.parametrize("call,needle", [
    (lambda a: a.predict(np.zeros((2, 5), np.float32)), r"expects \(4,\) \(one observation\)"),
    (lambda a: a.predict(np.zeros((2, 4), np.float32), None, np.ones(3, bool)), "episode_start has 3 entries"),
    (lambda a: a.predict(np.zeros(4, np.float32), a.predict(np.zeros(4, np.float32))[1], np.zeros(1, bool)),
     "wrap the env first"),
    (lambda a: a.evaluate(__import__("gymnasium").make("CartPole-v1"), episodes=1), "does not match the agent's"),
    (lambda a: a.evaluate(episodes=2, target_return=float("nan")), "finite number"),
    (lambda a: a.evaluate(episodes=1, mode="fast"), "mode must be one of cached, window"),
    (lambda a: a.evaluate(episodes=1, target_return="high"), "target_return must be float"),
    (lambda a: a.evaluate(episodes=1, acting="window"), "acting settings must be a dict"),
    (lambda a: a.evaluate(episodes=1, decode="soft"), "'decode' is not an acting setting of dt"),
    (lambda a: a.predict(np.zeros(4, np.float32), a.predict(np.zeros(4, np.float32))[1], acting={"mode": "window"}),
     "pass them with state=None"),
])
def test_bad_api_input_is_a_clear_error_and_changes_nothing(dt_run, call, needle):
    agent = rl_seq.load_agent(dt_run)
    meta, config = dict(agent.meta), agent.config
    with pytest.raises(ValueError, match=needle):
        call(agent)
    assert agent.meta == meta and agent.config == config


def test_an_agent_built_directly_saves_a_loadable_name(tmp_path):
    import gymnasium as gym

    from rl_seq.agents import QTAgent

    agent = QTAgent(gym.spaces.Box(-1, 1, (4,)), gym.spaces.Box(-1, 1, (2,)), backbone={"d_model": 16})
    assert type(rl_seq.load_agent(agent.save(tmp_path / "m"))) is QTAgent


def _kill_after_checkpoint(argv: list[str], ckpt, at_least: int) -> int:
    proc = subprocess.Popen([sys.executable, "-m", "rl_seq", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and not (ckpt.exists() and load_checkpoint(ckpt)["step"] >= at_least):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return load_checkpoint(ckpt)["step"]


def test_online_sigkill_resumes_with_continuous_metrics(tmp_path):
    """PPO killed with SIGKILL: --resume continues from the last checkpoint; the metrics hold each
    update once, in order, up to the budget."""
    out = tmp_path / "ppo"
    argv = ["train", "lstm", "--env", "CartPole-v1", "--steps", "4096", "--out", str(out), "--set", "n_envs=2",
            "--set", "n_steps=64", "--set", "seq_len=32", "--set", "n_epochs=4", "--set", "n_minibatches=4",
            "--set", "checkpoint_every=128", "--set", "eval_every=1024",
            "--set", "eval_episodes=2", "--set", "threads=1"]
    step = _kill_after_checkpoint(argv, out / "checkpoints" / "last.pt", 512)
    assert 512 <= step < 4096 and not (out / "model").exists()
    assert main([*argv, "--resume"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r["step"] for r in rows if r["kind"] == "train"]
    assert train == list(range(128, 4096 + 1, 128))  # every update once, none lost, none twice
    assert [r["step"] for r in rows if r["kind"] == "eval"] == [1024, 2048, 3072, 4096]


def test_interrupted_online_phase_from_a_trained_run_resumes_to_the_end(dt_run, tmp_path, monkeypatch):
    """``odt --init``: the starting policy is evaluated once (``before``); Ctrl-C saves the buffer
    and the temperature, and --resume finishes the run without evaluating the start again."""
    import shutil

    from rl_seq.agents.odt import TrajectoryBuffer

    init = tmp_path / "init"
    shutil.copytree(dt_run, init)
    out = tmp_path / "odt"
    argv = ["train", "odt", "--init", str(init), "--online-steps", "240", "--out", str(out),
            "--set", "batch_size=4", "--set", "updates_per_trajectory=2", "--set", "eval_every=0",
            "--set", "eval_episodes=2", "--set", "log_every=20", "--set", "checkpoint_every=40"]
    real, calls = TrajectoryBuffer.add, {"n": 0}

    def add(self, t):  # Ctrl-C while the second online trajectory is stored
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, t)

    monkeypatch.setattr(TrajectoryBuffer, "add", add)
    assert main(argv) == 130
    ck = load_checkpoint(out / "checkpoints" / "last.pt")
    assert 0 < ck["step"] < 240 and "temperature" in ck and json.loads(ck["evals"])["before"]["step"] == 0
    monkeypatch.setattr(TrajectoryBuffer, "add", real)
    assert main([*argv, "--resume"]) == 0
    report = json.loads((out / "eval.json").read_text())
    assert report["before"]["step"] == 0 and report["last"]["step"] >= 240
    assert "offline" not in report


def test_an_evaluation_env_that_cannot_be_made_is_found_before_training(tmp_path, monkeypatch, capsys):
    """A dataset whose env needs a missing package (MuJoCo for hopper) stops before the run
    folder is made, not at the first evaluation."""
    import gymnasium as gym

    real = gym.make

    def make(env_id, *a, **k):
        if env_id == "rl_seq/PointGoal-v0":
            raise gym.error.DependencyNotInstalled("MuJoCo is not installed")
        return real(env_id, *a, **k)

    monkeypatch.setattr(gym, "make", make)
    assert main(train_argv(tmp_path / "r", 5, "--set", "eval_episodes=2")) == 2
    err = capsys.readouterr().err
    assert "evaluation env 'rl_seq/PointGoal-v0': MuJoCo is not installed" in err and "eval_episodes=0" in err
    assert not (tmp_path / "r").exists()
