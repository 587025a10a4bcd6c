import pytest

from mmcr.train.config import PRESETS, ConfigError, load_config, parse_override


@pytest.mark.parametrize("preset", PRESETS)
def test_every_shipped_preset_resolves(preset):
    cfg = load_config(preset)
    assert cfg["augment"]["views"] >= 1
    assert cfg["name"]


def test_authors_cifar_recipe_facts():
    cfg = load_config("cifar10")
    assert cfg["augment"]["views"] == 40 and cfg["train"]["batch_size"] == 32
    assert cfg["model"]["backbone"] == "resnet50" and cfg["model"]["cifar_stem"]
    assert cfg["model"]["projector"] == {"hidden": [512], "out_dim": 128}
    assert cfg["optim"]["name"] == "adam" and cfg["optim"]["lr"] == 1e-3 and cfg["optim"]["weight_decay"] == 1e-6
    assert cfg["train"]["epochs"] == 500


def test_authors_imagenet_recipe_facts():
    cfg = load_config("imagenet")
    assert cfg["optim"]["name"] == "lars" and cfg["optim"]["lr"] == 0.6 and cfg["optim"]["scale_lr"]
    assert cfg["optim"]["warmup_epochs"] == 10 and cfg["optim"]["schedule"] == "cosine"
    assert cfg["model"]["momentum"] == {"enabled": True, "tau": 0.99, "schedule": "constant"}
    assert cfg["model"]["projector"] == {"hidden": [8192, 8192], "out_dim": 512}
    assert cfg["train"]["batch_size"] == 2048 and cfg["augment"]["views"] == 2


def test_overrides_are_typed_and_validated():
    cfg = load_config("digits", ["optim.lr=2e-3", "train.epochs=3", "model.projector.hidden=[32, 16]"])
    assert cfg["optim"]["lr"] == pytest.approx(2e-3)
    assert cfg["train"]["epochs"] == 3
    assert cfg["model"]["projector"]["hidden"] == [32, 16]
    with pytest.raises(ConfigError, match="valid keys here: .*lr"):
        load_config("digits", ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="choose one of adam, adamw, sgd, lars"):
        load_config("digits", ["optim.name=rmsprop"])
    with pytest.raises(ConfigError, match="must be a number"):
        load_config("digits", ["train.epochs=many"])
    with pytest.raises(ConfigError, match="must be an integer"):
        load_config("digits", ["train.epochs=2.5"])
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("optim.lr")
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config("cifar11")


def test_free_form_sections_merge():
    cfg = load_config("digits", ["objective.kwargs.lmbda=0.01", "augment.overrides.scale=[0.5, 1.0]"])
    assert cfg["objective"]["kwargs"] == {"lmbda": 0.01}
    assert cfg["augment"]["overrides"]["scale"] == [0.5, 1.0]
    assert cfg["augment"]["overrides"]["size"] == 16


def test_yaml_file_preset(tmp_path):
    p = tmp_path / "my.yaml"
    p.write_text("name: mine\ntrain: {epochs: 2}\n")
    cfg = load_config(p)
    assert cfg["name"] == "mine" and cfg["train"]["epochs"] == 2
