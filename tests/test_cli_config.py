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
    (["eval", "detection", "SRC", "--root", "VOC"], "solver.lr", ("solver.max_iter=10", {"solver": {"max_iter": 10}})),
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
