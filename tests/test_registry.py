"""The one registry shape: every registry's entries, lookups and option checks, ``mmcr list``, and config
choices read from the registries."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import re
from pathlib import Path

import pytest
import torch

import mmcr.data.datasets as D
from mmcr.cli import REGISTRY_ORDER, main, registries
from mmcr.data import DATASETS, DatasetError, load_dataset
from mmcr.data.moving_digits import load_moving_digits
from mmcr.models import BACKBONES, MomentumEncoder, build_backbone
from mmcr.objectives import OBJECTIVES, VICRegLoss, build_objective
from mmcr.registry import Registry, RegistryError
from mmcr.run.config import ConfigError, load_config
from mmcr.train.optim import LR_SCHEDULES, OPTIMIZERS, lr_factor


def test_every_registry_has_the_one_shape():
    regs = registries()
    assert [r.plural for r in regs] == list(REGISTRY_ORDER)
    for reg in regs:
        assert len(reg) > 0, reg.plural
        for e in reg.entries():
            assert callable(e.builder), (reg.plural, e.name)
            assert e.doc and "\n" not in e.doc and len(e.doc) <= 110, (reg.plural, e.name)
            assert e.options is None or dataclasses.is_dataclass(e.options), (reg.plural, e.name)
            if e.options is not None:  # every option has a default (nested sections as a.b)
                assert {k.split(".")[0] for k in reg.defaults(e.name)} == set(e.option_names())
            assert reg.get(e.name) is e or e.family


def test_unknown_names_and_options_are_one_line_errors():
    with pytest.raises(RegistryError) as e:
        OPTIMIZERS.get("adagrad")
    assert str(e.value) == "unknown optimiser 'adagrad'; choose one of adam, adamw, sgd, lars"
    with pytest.raises(DatasetError, match=r"^unknown option 'lazy' for data set 'digits'; it takes size, "
                                           r"test_fraction$"):
        DATASETS.check_options("digits", {"lazy": True})
    with pytest.raises(RegistryError, match=r"^unknown option 'x' for optimiser 'adam'; it takes no options$"):
        OPTIMIZERS.check_options("adam", {"x": 1})
    with pytest.raises(RegistryError, match=r"^data\.options\.size must be in \[1, 4096\], got 0$"):
        DATASETS.check_options("digits", {"size": 0}, where="data.options.")
    assert DATASETS.check_options("digits", {"size": 16.0}) == {"size": 16}  # coerced like a config value


def test_register_refuses_duplicates_and_multi_line_docs():
    reg = Registry("widget", "widgets-test-only")
    reg.register("a", lambda: 1, doc="one")
    with pytest.raises(ValueError, match="registered already"):
        reg.register("a", lambda: 2, doc="two")
    with pytest.raises(ValueError, match="one-line doc"):
        reg.register("b", lambda: 2, doc="two\nlines")

    @reg.register("c", doc="a decorated builder")
    def c():
        return 3

    assert reg.get("c").builder is c and reg.names() == ["a", "c"] and list(reg) == ["a", "c"]


def test_mmcr_list_prints_every_registry(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for reg in registries():
        assert f"{reg.plural} ({reg.kind})" in out
        for e in reg.entries():
            assert f"  {e.name}" in out and e.doc in out
    assert "size = null" not in out  # options only with a registry name


def test_mmcr_list_of_one_registry_shows_options_with_defaults(capsys):
    assert main(["list", "datasets"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("datasets (data set)\n") and "objectives" not in out
    assert "size = null  (in [1, 4096]; or null)" in out and "test_fraction = 0.2  (in (0, 1))" in out
    assert 'on_error = "skip"  (one of skip, raise)' in out
    assert main(["list", "lr-schedules"]) == 0
    assert capsys.readouterr().out.startswith("lr_schedules")
    assert main(["list", "backbones"]) == 0
    assert "options: free-form, checked by the builder" in capsys.readouterr().out


def test_mmcr_list_unknown_registry_is_one_line(capsys):
    assert main(["list", "losses"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unknown registry 'losses'; choose one of " + ", ".join(REGISTRY_ORDER) in err


def test_data_set_options_are_checked_through_load_dataset(tmp_path):
    with pytest.raises(DatasetError, match=r"^unknown option 'lazy' for data set 'cifar10'; it takes size, download$"):
        load_dataset("cifar10", tmp_path, lazy=True)
    with pytest.raises(DatasetError, match=r"^test_fraction must be in \(0, 1\), got 1\.5$"):
        load_dataset("mnist5k", test_fraction=1.5)
    with pytest.raises(DatasetError, match=r"^download must be true or false, got 'yes'$"):
        load_dataset("stl10", tmp_path, download="yes")
    with pytest.raises(DatasetError, match=r"^frames must be >= 1, got 0$"):
        load_dataset("moving-digits", frames=0)
    with pytest.raises(DatasetError, match=r"^invalid value 'hwc' for layout; choose one of auto, nhwc, nchw$"):
        load_dataset("npz", tmp_path / "x.npz", layout="hwc")
    with pytest.raises(RegistryError, match=r"^unknown data set 'mnist'; choose one of digits, mnist5k, "):
        load_dataset("mnist")
    assert load_dataset("digits", size=12.0).images.shape[-2:] == (12, 12)


def _defaults(fn) -> dict:
    return {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not p.empty}


def test_data_set_sections_agree_with_the_loaders_defaults():
    """The options section is what ``mmcr list`` shows: its defaults must be the loaders' own."""
    wrapped = {"digits": D._load_digits, "mnist5k": D._load_mnist5k, "cifar10": D._load_cifar,
               "cifar100": D._load_cifar, "stl10": D._load_stl10}
    for e in DATASETS.entries():
        loader = wrapped.get(e.name, e.builder)
        own = _defaults(loader)
        for key, default in DATASETS.defaults(e.name).items():
            assert own[key] == default, (e.name, key)
    assert DATASETS.get("moving-digits").builder is load_moving_digits


def test_objective_options_are_checked_by_the_section():
    with pytest.raises(RegistryError, match=r"^sim_coeff must be >= 0 and finite, got -1\.0$"):
        build_objective("vicreg", sim_coeff=-1)
    with pytest.raises(RegistryError, match=r"^unknown option 'tau' for objective 'simclr'; it takes temperature, "):
        build_objective("simclr", tau=0.5)
    with pytest.raises(RegistryError, match=r"^invalid value 'svd2' for method; choose one of auto, gram, svd, "):
        build_objective("mmcr", method="svd2")
    loss = build_objective("VICReg", cov_coeff=2, dtype=torch.float64)
    assert isinstance(loss, VICRegLoss) and loss.cov_coeff == 2.0 and loss.dtype == torch.float64
    assert build_objective("mmcr", dtype="float64").dtype == torch.float64
    for e in OBJECTIVES.entries():  # every option is a constructor argument with the same default
        own = _defaults(e.builder.__init__)
        for key, default in OBJECTIVES.defaults(e.name).items():
            assert own[key] == default, (e.name, key)


def test_evaluation_options_are_their_settings_sections():
    from mmcr.evaluate.api import EVALUATIONS, run_knn
    from mmcr.evaluate.settings import KnnSettings

    assert EVALUATIONS.names() == ["knn", "linear", "semi", "transfer", "detection", "brainscore"]
    assert EVALUATIONS.get("knn").builder is run_knn and EVALUATIONS.get("knn").options is KnnSettings
    assert EVALUATIONS.check_options("knn", {"k": 20.0}) == {"k": 20}
    with pytest.raises(RegistryError, match=r"^k must be >= 1, got 0$"):
        EVALUATIONS.check_options("knn", {"k": 0})
    with pytest.raises(RegistryError, match=r"^unknown option 'kk' for evaluation 'knn'; it takes dataset, "):
        EVALUATIONS.check_options("knn", {"kk": 20})


def test_backbone_family_resolves_every_prefixed_name():
    family = BACKBONES.get("timm:vit_small_patch16_224")
    assert family.name == "timm:<name>" and family.family and family is BACKBONES.get("timm:resnet50.a1_in1k")
    assert "timm:" not in BACKBONES and "vit_small_patch16_224" not in BACKBONES
    assert {"resnet18", "resnet50", "resnet_tiny", "resnet_mini"} <= set(BACKBONES.names())
    with pytest.raises(RegistryError, match=r"^unknown backbone 'timm:'; choose one of .*timm:<name>$"):
        BACKBONES.get("timm:")
    assert build_backbone("resnet_tiny").feature_dim == 64
    with pytest.raises(ValueError, match="resnet_tiny takes no model.backbone_options"):
        build_backbone("resnet_tiny", options={"img_size": 32})


def test_augment_preset_options_are_the_override_keys():
    from mmcr.augment import AUGMENT_PRESETS, PRESETS
    from mmcr.augment.multiview import _TRAIN_KEYS

    assert AUGMENT_PRESETS.names() == list(PRESETS)
    for name in PRESETS:
        assert set(AUGMENT_PRESETS.get(name).option_names()) == _TRAIN_KEYS
        assert AUGMENT_PRESETS.get(name).builder() == PRESETS[name]
    with pytest.raises(RegistryError, match=r"^unknown option 'sise' for augmentation preset 'cifar'; it takes "):
        AUGMENT_PRESETS.check_options("cifar", {"sise": 16})


def test_schedules_are_registry_entries():
    assert lr_factor(10, 10, 0, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(5, 10, 0, "cosine", 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert LR_SCHEDULES.names() == ["constant", "cosine"]
    enc = MomentumEncoder(torch.nn.Linear(2, 2), tau=0.9, schedule="cosine")
    assert enc.tau(0, 10) == pytest.approx(0.9) and enc.tau(10, 10) == pytest.approx(1.0)
    with pytest.raises(RegistryError, match=r"^unknown momentum schedule 'linear'; choose one of constant, cosine$"):
        MomentumEncoder(torch.nn.Linear(2, 2), schedule="linear")


@pytest.mark.parametrize("key, registry", [
    ("objective.name", OBJECTIVES), ("data.name", DATASETS), ("optim.name", OPTIMIZERS),
    ("optim.schedule", LR_SCHEDULES),
])
def test_config_choices_come_from_the_registries(key, registry, monkeypatch):
    with pytest.raises(ConfigError) as e:
        load_config("digits", [f"{key}=nothing-here"])
    assert str(e.value).endswith("; choose one of " + ", ".join(sorted(registry.names())))
    entry = registry.get(registry.names()[0])
    monkeypatch.setitem(registry._entries, "added-later", dataclasses.replace(entry, name="added-later"))
    assert load_config("digits", [f"{key}=added-later"]) is not None  # valid as soon as it is registered


def test_config_backbone_choices_come_from_the_registry():
    with pytest.raises(ConfigError, match=r"invalid value 'resnet5' for model.backbone; choose one of "
                                          + re.escape(", ".join(BACKBONES.names()))):
        load_config("digits", ["model.backbone=resnet5"])
    assert load_config("digits", ["model.backbone=timm:vit_tiny_patch16_224",
                                  "model.cifar_stem=false"]).model.backbone == "timm:vit_tiny_patch16_224"


def test_the_registry_module_imports_only_the_schema_engine():
    import mmcr.registry

    tree = ast.parse(Path(mmcr.registry.__file__).read_text())
    mine = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mmcr"):
            mine |= {node.module + "." + a.name for a in node.names}
        elif isinstance(node, ast.Import):
            mine |= {a.name for a in node.names if a.name.startswith("mmcr")}
    assert mine == {"mmcr.schema"}


def test_the_package_loads_every_registry_a_config_chooses_from():
    from mmcr.registry import registry

    for plural in ("datasets", "augment_presets", "backbones", "objectives", "optimizers", "lr_schedules",
                   "momentum_schedules"):
        assert registry(plural).plural == plural
    with pytest.raises(RegistryError, match=r"^unknown registry 'losses'; choose one of "):
        registry("losses")
