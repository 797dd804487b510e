from pathlib import Path

import pytest

from training.config import (
    ConfigError,
    TrainConfig,
    check_resume_compatible,
    load_config,
    parse_set_options,
)


def test_cyclegan_defaults_follow_the_paper() -> None:
    cfg = load_config(None, {"dataset": "day2night"})
    assert (cfg.lr, cfg.beta1, cfg.beta2) == (2e-4, 0.5, 0.999)
    assert cfg.lambda_cycle == 10 and cfg.lambda_identity_weight == 5.0
    assert (cfg.pool_size, cfg.gan_mode, cfg.lr_policy) == (50, "lsgan", "linear")
    assert (cfg.generator, cfg.discriminator, cfg.norm) == ("resnet_9blocks", "basic", "instance")
    assert cfg.resolved_load_size == 286  # 286 -> 256 random crops


def test_discogan_gets_its_own_defaults_unless_overridden() -> None:
    cfg = load_config(None, {"dataset": "day2night", "model": "discogan", "batch_size": 8})
    assert (cfg.generator, cfg.discriminator, cfg.norm) == ("discogan", "discogan", "batch")
    assert (cfg.gan_mode, cfg.pool_size, cfg.lambda_identity, cfg.size) == ("vanilla", 0, 0.0, 64)
    assert cfg.weight_decay == 1e-5 and cfg.lr_policy == "constant"
    assert cfg.batch_size == 8


def test_flags_override_yaml(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("dataset: day2night\nngf: 32\nlr: 0.001\n")
    cfg = load_config(path, {"ngf": 8})
    assert cfg.ngf == 8 and cfg.lr == 0.001


def test_round_trip_through_saved_yaml(tmp_path: Path) -> None:
    cfg = load_config(None, {"dataroot": tmp_path, "ngf": 8, "amp": "bf16"})
    cfg.save(tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"dataset": "day2night", "learning_rate": 1}, "unknown option 'learning_rate'"),
        ({"dataset": "day2night", "generator": "resnet_99"}, "resnet_9blocks"),
        ({"dataset": "day2night", "generator": "unet_100"}, "unet_<side>"),
        ({"dataset": "day2night", "norm": "layer"}, "instance_affine"),
        ({"dataset": "day2night", "model": "pix2pix"}, "model"),
        ({"dataset": "day2night", "gan_mode": "ls"}, "gan_mode"),
        ({}, "exactly one of dataroot"),
        ({"dataset": "day2night", "dataroot": "/tmp"}, "exactly one of dataroot"),
        ({"dataset": "horse2zebra"}, "built-in pairs: day2night"),
        ({"dataset": "day2night", "batch_size": 0}, "batch_size"),
        ({"dataset": "day2night", "model": "discogan", "size": 32}, "needs size >= 64"),
        ({"dataset": "day2night", "size": 16}, "needs size >= 24"),
        ({"dataset": "day2night", "n_layers_d": 4}, "'basic' is the 3-layer"),
    ],
)
def test_bad_config_is_a_clear_error(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, data)


def test_any_resnet_depth_and_affine_instance_norm_train() -> None:
    cfg = load_config(None, {"dataset": "day2night", "generator": "resnet_4blocks",
                             "norm": "instance_affine"})  # fmt: skip
    assert (cfg.generator, cfg.norm) == ("resnet_4blocks", "instance_affine")


def test_yaml_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "list.yaml")


def test_set_options_become_typed_config_values() -> None:
    options = parse_set_options(["lr=1e-3", "flip=false", "norm=batch", "threads=2"])
    cfg = load_config(None, {"dataset": "day2night", **options})
    assert (cfg.lr, cfg.flip, cfg.norm, cfg.threads) == (1e-3, False, "batch", 2)
    with pytest.raises(ConfigError, match="key=value"):
        parse_set_options(["lr"])


def test_resume_may_extend_but_not_change_the_model() -> None:
    saved = TrainConfig(dataset="day2night", ngf=8, max_steps=10)
    assert check_resume_compatible(saved, {"max_steps": 20}).max_steps == 20
    assert check_resume_compatible(saved, {"ngf": 8}).ngf == 8  # same value is fine
    with pytest.raises(ConfigError, match="ngf: run has 8, asked for 16"):
        check_resume_compatible(saved, {"ngf": 16})
    with pytest.raises(ConfigError, match="unknown option"):
        check_resume_compatible(saved, {"ngff": 16})


def test_digest_tracks_architecture_only() -> None:
    a = TrainConfig(dataset="day2night", ngf=8)
    assert a.digest() == TrainConfig(dataset="flat2relief", ngf=8, lr=1).digest()
    assert a.digest() != TrainConfig(dataset="day2night", ngf=16).digest()
