"""Every command that takes options has --help-config and --print-config over its settings section, and
every library entry point refuses an unknown setting by name (mmcr.schema)."""

import pytest
import yaml

from mmcr.cli import main
from mmcr.schema import ConfigError

# (command line without the config flags, a key --help-config lists, a --set that --print-config shows)
COMMANDS = [
    (["pretrain"], "optim.lr", ("train.epochs=3", {"train": {"epochs": 3}})),
    (["eval", "knn", "SRC"], "temperature", ("k=7", {"k": 7})),
    (["eval", "linear", "SRC"], "weight_decays", ("aug_passes=2", {"aug_passes": 2})),
    (["eval", "semi", "SRC"], "head_init", ("epochs=4", {"epochs": 4})),
    (["eval", "transfer", "SRC"], "num_workers", ("dataset=dtd", {"dataset": "dtd"})),
    (["eval", "detection", "SRC", "--root", "VOC"], "solver.lr", ("solver.lr=0.01", {"solver": {"lr": 0.01}})),
    (["analyze", "SRC", "--out", "OUT"], "n_views", ("n_t=9", {"n_t": 9})),
    (["export", "brainscore", "SRC", "OUT"], "identifier", ("seed=5", {"seed": 5})),
    (["data", "shard", "FOLDER", "OUT"], "shard_size", ("shard_size=9", {"shard_size": 9})),
]


def _ids(c):
    return " ".join(w for w in c[0] if w.isalpha() and w.islower())


@pytest.mark.parametrize("argv,key,_", COMMANDS, ids=[_ids(c) for c in COMMANDS])
def test_help_config_lists_every_key_without_positional_arguments(argv, key, _, capsys):
    words = [w for w in argv if w.islower() and not w.startswith("-")]  # the command words only
    with pytest.raises(SystemExit) as e:
        main([*words, "--help-config"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    assert any(line.startswith(f"{key} = ") for line in out.splitlines()), out


@pytest.mark.parametrize("argv,_,change", COMMANDS, ids=[_ids(c) for c in COMMANDS])
def test_print_config_prints_the_resolved_yaml(argv, _, change, tmp_path, capsys):
    argv = [str(tmp_path / w) if w.isupper() else w for w in argv]
    assert main([*argv, "--set", change[0], "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    (k, v), = change[1].items()
    if isinstance(v, dict):
        assert {kk: printed[k][kk] for kk in v} == v
    else:
        assert printed[k] == v
    assert not list(tmp_path.iterdir())  # nothing was run or written


def test_unknown_set_keys_and_contradicting_flags_are_refused(capsys):
    assert main(["eval", "knn", "x", "--set", "kk=3", "--print-config"]) == 2
    assert "unknown config key 'kk'; valid keys here: batch_size," in capsys.readouterr().err
    assert main(["eval", "knn", "x", "--k", "3", "--set", "k=4"]) == 2
    assert "--k 3 contradicts k=4 (from --set); give k once" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["run_knn", "run_linear", "run_semi", "run_transfer"])
def test_evaluations_refuse_unknown_settings_by_name(name):
    from mmcr.evaluate import api

    with pytest.raises(ConfigError, match=r"^unknown config key 'kk'; valid keys here: .*batch_size"):
        getattr(api, name)("random:resnet_tiny", kk=3)
    with pytest.raises(ConfigError, match="batch_size must be >= 1, got 0"):
        getattr(api, name)("random:resnet_tiny", batch_size=0)
    with pytest.raises(TypeError, match="settings must be a"):
        getattr(api, name)("random:resnet_tiny", "digits")


def test_analysis_and_export_settings_refuse_unknown_names():
    from mmcr.evaluate.settings import BrainscoreExportSettings
    from mmcr.geometry.settings import AnalysisSettings
    from mmcr.schema import resolve

    with pytest.raises(ConfigError, match=r"unknown config key 'n_imgs'; valid keys here: .*n_images"):
        resolve(AnalysisSettings, None, {"n_imgs": 3})
    with pytest.raises(ConfigError, match=r"fit_range must be two ranks"):
        resolve(AnalysisSettings, None, {"fit_range": [5, 2]})
    with pytest.raises(ConfigError, match="region_layer_map or choose_layers, not both"):
        resolve(BrainscoreExportSettings, None, {"region_layer_map": "a.json", "choose_layers": "b.npz"})


def test_detection_defaults_are_the_shipped_preset_and_protocols_are_checked():
    from mmcr.evaluate.detection.config import DetectionConfig, detection_config, detection_preset_path
    from mmcr.schema import read_yaml

    assert DetectionConfig.from_dict(read_yaml(detection_preset_path("voc-c4"))) == DetectionConfig()
    cfg = detection_config(None, ["protocols.voc07.iterations=100", "protocols.mine={train: [2012/train], "
                                  "test: 2007/test, iterations: 5, steps: [3]}"])
    assert cfg.protocols["voc07"] == {"train": ["2007/trainval"], "test": "2007/test", "iterations": 100,
                                      "steps": [5400, 6600]}  # a protocol given in part keeps the rest
    assert cfg.protocols["mine"]["steps"] == [3]
    for override, match in [("protocols.voc07.steps=[9,2]", r"invalid value \[9, 2\] for protocols.voc07.steps"),
                            ("protocols.voc07.iterations=-1", r"protocols.voc07.iterations must be >= 0, got -1"),
                            ("protocols.x={train: [a]}", "protocols.x needs the fields .* missing test"),
                            ("protocols.voc07.train=[2007]", "give 'YEAR/SET' image sets"),
                            ("solver.gamma=0", r"solver.gamma must be in \(0, 1\], got 0.0")]:
        with pytest.raises(ConfigError, match=match):
            detection_config(None, [override])


def test_detection_flags_contradicting_set_are_refused(tmp_path, capsys):
    argv = ["eval", "detection", "src", "--root", str(tmp_path), "--print-config"]
    assert main([*argv, "--norm", "frozen", "--set", "model.norm=frozen"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["model"]["norm"] == "frozen"
    assert main([*argv, "--workers", "2", "--set", "solver.num_workers=3"]) == 2
    assert "--workers 2 contradicts solver.num_workers=3 (from --set)" in capsys.readouterr().err
