"""The typed run description: presets, overrides, validation against meaning and registries, resume rules."""

import pytest

from mmcr.run.config import (
    ConfigError,
    RunConfig,
    available_presets,
    config_changes,
    describe_fields,
    load_config,
    parse_override,
)


@pytest.mark.parametrize("preset", available_presets())
def test_every_shipped_preset_resolves(preset):
    cfg = load_config(preset)
    assert isinstance(cfg, RunConfig) and cfg.augment.views >= 1 and cfg.name
    assert RunConfig.from_dict(cfg.to_dict()) == cfg  # what a run saves is what it reads back


def test_authors_cifar_recipe_facts():
    cfg = load_config("cifar10")
    assert cfg.augment.views == 40 and cfg.train.batch_size == 32
    assert cfg.model.backbone == "resnet50" and cfg.model.cifar_stem
    assert (cfg.model.projector.hidden, cfg.model.projector.out_dim) == ([512], 128)
    assert cfg.optim.name == "adam" and cfg.optim.lr == 1e-3 and cfg.optim.weight_decay == 1e-6
    assert cfg.train.epochs == 500


def test_authors_imagenet_recipe_facts():
    cfg = load_config("imagenet")
    assert cfg.optim.name == "lars" and cfg.optim.lr == 0.6 and cfg.optim.scale_lr
    assert cfg.optim.warmup_epochs == 10 and cfg.optim.schedule == "cosine"
    m = cfg.model.momentum
    assert (m.enabled, m.tau, m.schedule) == (True, 0.99, "constant")
    assert (cfg.model.projector.hidden, cfg.model.projector.out_dim) == ([8192, 8192], 512)
    assert cfg.train.batch_size == 2048 and cfg.augment.views == 2


def test_overrides_are_typed_and_validated():
    cfg = load_config("digits", ["optim.lr=2e-3", "train.epochs=3", "model.projector.hidden=[32, 16]"])
    assert cfg.optim.lr == pytest.approx(2e-3) and cfg.train.epochs == 3
    assert cfg.model.projector.hidden == [32, 16]
    with pytest.raises(ConfigError, match="valid keys here: .*lr"):
        load_config("digits", ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="choose one of adam, adamw, lars, sgd"):
        load_config("digits", ["optim.name=rmsprop"])
    with pytest.raises(ConfigError, match="must be an integer"):
        load_config("digits", ["train.epochs=many"])
    with pytest.raises(ConfigError, match="must be an integer"):
        load_config("digits", ["train.epochs=2.5"])
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("optim.lr")
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config("cifar11")


@pytest.mark.parametrize(
    "override,match",
    [
        ("optim.grad_clip=-1", r"optim.grad_clip must be > 0"),
        ("optim.weight_decay=-1e-4", r"optim.weight_decay must be >= 0"),
        ("optim.lars_eta=0", r"optim.lars_eta must be > 0"),
        ("optim.momentum=1.5", r"optim.momentum must be in \[0, 1\)"),
        ("optim.betas=[0.9, 1.2]", r"optim.betas must be in \[0, 1\)"),
        ("optim.final_lr_ratio=2", r"optim.final_lr_ratio must be in \[0, 1\]"),
        ("train.max_steps=-5", r"train.max_steps must be >= 1"),
        ("train.log_every_steps=0", r"train.log_every_steps must be >= 1"),
        ("train.threads=-1", r"train.threads must be in \[1, 1024\]"),
        ("train.time_budget_s=0", r"train.time_budget_s must be > 0"),
        ("train.device=tpu", r"invalid value 'tpu' for train.device; use auto, cpu, cuda"),
        ("seed=-1", r"seed must be in \[0, 4294967295\]"),
        ("data.val_fraction=1", r"data.val_fraction must be in \[0, 1\)"),
        ("eval.knn_temperature=0", r"eval.knn_temperature must be > 0"),
        ("model.projector.hidden=[64, 0]", r"model.projector.hidden must be >= 1"),
        ("model.momentum.tau=1.5", r"model.momentum.tau must be in \[0, 1\]"),
        ("model.backbone=resnet5", r"invalid value 'resnet5' for model.backbone; choose one of"),
        ("model.cifar_stem=false", r"resnet_tiny always has the CIFAR stem"),
        ("data.name=mnist", r"invalid value 'mnist' for data.name; choose one of"),
        ("objective.name=byol", r"invalid value 'byol' for objective.name; choose one of"),
        ("augment.preset=eval", r"invalid value 'eval' for augment.preset"),
        ("model.projector.hidden=[64,", r"cannot read the value of override"),
    ],
)
def test_values_are_checked_against_their_meaning(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config("digits", [override])


def test_choices_come_from_the_registries():
    from mmcr.augment import TRAIN_PRESETS
    from mmcr.data import DATASET_NAMES
    from mmcr.objectives import OBJECTIVES

    for name in OBJECTIVES:  # every registered objective (aliases too) is a valid config value
        assert load_config("digits", [f"objective.name={name}"]).objective.name == name
    for name in TRAIN_PRESETS:
        assert load_config("digits", [f"augment.preset={name}"]).augment.preset == name
    for name in DATASET_NAMES:
        assert load_config("digits", [f"data.name={name}"]).data.name == name
    docs = dict((p, d) for p, _, d in describe_fields())
    assert "mmcr" in docs["objective.name"] and "> 0" in docs["optim.lr"]


def test_free_form_sections_merge():
    cfg = load_config("digits", ["objective.kwargs.lmbda=0.01", "augment.overrides.scale=[0.5, 1.0]"])
    assert cfg.objective.kwargs == {"lmbda": 0.01}
    assert cfg.augment.overrides["scale"] == [0.5, 1.0] and cfg.augment.overrides["size"] == 16


def test_yaml_file_preset_and_syntax_errors(tmp_path):
    p = tmp_path / "my.yaml"
    p.write_text("name: mine\ntrain: {epochs: 2}\n")
    cfg = load_config(p)
    assert cfg.name == "mine" and cfg.train.epochs == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: mine\ntrain: {epochs: 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml is not valid YAML: .* line \d+, column \d+; fix the file"):
        load_config(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(bad)


def test_config_changes_carry_their_resume_rule():
    a = load_config("digits")
    b = a.replace(**{"optim.lr": 2e-3, "train.epochs": 20, "model.backbone": "resnet_small"})
    rules = {c.path: c.rule for c in config_changes(a, b)}
    assert rules == {"optim.lr": "apply", "train.epochs": "free", "model.backbone": "fixed"}
