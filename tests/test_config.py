"""Config overrides and their errors."""

import pytest

from rl_seq.agents import config_for
from rl_seq.config import ConfigError, parse_overrides


def test_preset_file_and_overrides_stack(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("algo: dc\nlr: 0.001\nbackbone:\n  n_layers: 5\n")
    cfg = config_for("dc", f, ["lr=3e-4", "backbone.mixer_options.kernel_size=4", "target_returns=[1, 2]"])
    assert cfg.backbone.mixer == "conv"  # preset
    assert cfg.backbone.n_layers == 5  # file
    assert cfg.lr == 3e-4 and isinstance(cfg.lr, float)  # override beats file
    assert cfg.backbone.mixer_options == {"kernel_size": 4}
    assert cfg.target_returns == [1.0, 2.0]


def test_unknown_key_lists_valid_keys_and_suggests():
    with pytest.raises(ConfigError, match=r"unknown key 'lrr'.*did you mean 'lr'.*valid keys: steps"):
        config_for("dt", overrides=["lrr=1"])
    with pytest.raises(ConfigError, match=r"backbone.n_layer.*did you mean 'backbone.n_layers'"):
        config_for("dt", overrides=["backbone.n_layer=2"])


def test_bad_types_and_values():
    with pytest.raises(ConfigError, match="steps must be int"):
        config_for("dt", overrides=["steps=many"])
    with pytest.raises(ConfigError, match="acting must be"):
        config_for("dt", overrides=["acting=fast"])
    with pytest.raises(ConfigError, match="unknown mixer"):
        config_for("dt", overrides=["backbone.mixer=transformer"])
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["lr"])


def test_unknown_and_planned_algorithms():
    with pytest.raises(ValueError, match="unknown algorithm 'ppo'; choose one of dt"):
        config_for("ppo")


def test_every_shipped_config_loads():
    from pathlib import Path

    import yaml

    files = sorted(Path(__file__).resolve().parents[1].glob("configs/*/*.yaml"))
    assert len(files) >= 20
    for f in files:
        algo = yaml.safe_load(f.read_text())["algo"]
        assert algo == f.parent.name, f
        config_for(algo, f)


def test_a_swapped_mixer_keeps_only_the_preset_options_it_accepts():
    assert config_for("relit").backbone.mixer_options == {"eta": 4, "r": 4, "gate_bias": -1.0, "conv": 4}
    cfg = config_for("relit", overrides=["backbone.mixer=linear"])  # GaLiTe: no oscillators
    assert cfg.backbone.mixer_options == {"eta": 4, "gate_bias": -1.0, "conv": 4}
    assert config_for("relit", overrides=["backbone.mixer=mlstm"]).backbone.mixer_options == {}
    assert config_for("dc", overrides=["backbone.mixer=attention"]).backbone.mixer_options == {}
    # with options of its own: the caller's stay, the preset's the mixer does not take go
    cfg = config_for("odt", backbone=dict(mixer="s4d", mixer_options=dict(state_size=64)))
    assert cfg.backbone.mixer_options == {"state_size": 64}
    cfg = config_for("odt", overrides=["backbone.mixer=s4d", "backbone.mixer_options.state_size=32"])
    assert cfg.backbone.mixer_options == {"state_size": 32}


def test_on_and_off_stay_words_for_text_fields(tmp_path):
    """YAML 1.1 reads off/on as booleans: ``--set amp=off`` and ``compile: on`` in a file still
    set the words, and a bool field still takes them as booleans."""
    f = tmp_path / "c.yaml"
    f.write_text("compile: on\n")
    cfg = config_for("dt", f, ["amp=off"])
    assert (cfg.amp, cfg.compile) == ("off", "on")
    assert config_for("dt", overrides=["wandb=off"]).wandb is False


def test_none_is_a_mixer_name_and_null_for_optional_fields():
    """``--backbone none`` (the memoryless baseline) and ``--set target_kl=none`` both work."""
    cfg = config_for("lstm", overrides=["backbone.mixer=none", "target_kl=none"])
    assert cfg.backbone.mixer == "none" and cfg.target_kl is None
    assert config_for("lstm", overrides=["target_kl=0.02"]).target_kl == 0.02


def test_decision_training_segment():
    assert config_for("dt").train_segment == 20 and config_for("dt").batch_size == 64  # the reference recipe
    assert config_for("dc").train_segment == 20 and config_for("dt", overrides=["segment=40"]).train_segment == 40
    with pytest.raises(ConfigError, match="segment must be >= context"):
        config_for("dt", overrides=["segment=10"])
