"""`mmcr export brainscore` without Brain-Score installed: the plugin's layout, JSON and sha256; its model.py
imported in a plain Python (torch only) gives mmcr's features exactly; the layer choice on recordings; bad
input is one line. The check inside the real library is `make test-brainscore` (tests/brainscore/)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from mmcr.cli import main
from mmcr.evaluate.brainscore import (
    REGIONS,
    centred_gram,
    check_identifier,
    export_brainscore_plugin,
    generated_stimuli,
    pca_scores,
    plain_network,
    spectrum_from_gram,
)
from mmcr.evaluate.features import eval_transform_for, layer_features
from mmcr.evaluate.sources import load_pretrained
from mmcr.geometry import eigenspectrum


def _import_plugin_model(folder, name):
    """The plugin's model.py as a plain module: it must not need brainscore_vision or mmcr to import."""
    spec = importlib.util.spec_from_file_location(name, folder / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run directory (digits preset: small ResNet, CIFAR stem, 16 px, mean/std 0.5) with BatchNorm
    statistics that are not the init's."""
    from mmcr.models import build_encoder
    from mmcr.run.config import load_config
    from mmcr.rundir import save_checkpoint

    run = tmp_path_factory.mktemp("run")
    cfg = load_config("digits", ["augment.overrides.mean=[0.3, 0.4, 0.5]", "augment.overrides.std=[0.6, 0.5, 0.4]"])
    torch.manual_seed(3)
    enc = build_encoder(cfg.model).train()
    with torch.no_grad():
        enc.backbone(torch.randn(16, 3, 16, 16) * 2 + 0.5)
    save_checkpoint({"config": cfg.to_dict(), "model": enc.state_dict(), "step": 7}, run, 7, keep=0)
    return run


@pytest.fixture(scope="module")
def tiny_plugin(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("plugins") / "mmcr_tiny"
    assert main(["export", "brainscore", str(tiny_run), str(out), "--identifier", "mmcr_tiny", "--stimuli", "30"]) == 0
    return out


def test_plugin_layout_json_and_sha256(tiny_plugin):
    names = {p.relative_to(tiny_plugin).as_posix() for p in tiny_plugin.rglob("*") if p.is_file()}
    assert names == {"__init__.py", "model.py", "plugin.json", "weights.safetensors", "setup.py", "requirements.txt",
                     "test.py", "mmcr_metadata.json", "region_layer_map/mmcr_tiny.json"}
    assert not any(p.name.startswith(".") for p in tiny_plugin.parent.iterdir())  # no temporary folder left
    init = (tiny_plugin / "__init__.py").read_text()
    assert "model_registry['mmcr_tiny'] = lambda: ModelCommitment(identifier='mmcr_tiny'" in init
    plugin = json.loads((tiny_plugin / "plugin.json").read_text())
    assert plugin["network"] == {"kind": "small", "arch": "resnet_tiny", "cifar_stem": True, "widths": [16, 32, 64],
                                 "blocks": [1, 1, 1]}
    assert plugin["preprocessing"] == {"size": 16, "interpolation": "bilinear", "mean": [0.3, 0.4, 0.5],
                                       "std": [0.6, 0.5, 0.4]}
    blob = (tiny_plugin / "weights.safetensors").read_bytes()
    assert plugin["weights"]["sha256"] == hashlib.sha256(blob).hexdigest()
    mapping = json.loads((tiny_plugin / "region_layer_map" / "mmcr_tiny.json").read_text())
    assert mapping == {"V1": "layers.0", "V2": "layers.1", "V4": "layers.1", "IT": "layers.2"}
    assert plugin["layers"] == ["layers.0", "layers.1", "layers.2"] and plugin["behavioral_readout_layer"] == "pool"
    meta = json.loads((tiny_plugin / "mmcr_metadata.json").read_text())
    assert meta["commitment"] == "default for ResNets" and meta["source"]["step"] == 7
    for layer in plugin["layers"]:
        spec = meta["spectra"]["layers"][layer]
        assert spec["n_stimuli"] == 30 and 1 <= spec["participation_ratio"] <= 29
        assert spec["power_law"]["fit_range"] == [11, 29] and np.isfinite(spec["power_law"]["alpha"])
    reqs = (tiny_plugin / "requirements.txt").read_text()
    assert "mmcr" not in reqs and "torch" in reqs and "safetensors" in reqs
    assert "MMCR" not in plugin["bibtex"] or "yerxa" in plugin["bibtex"]


def test_plugin_model_equals_mmcr_features_without_brainscore(tiny_run, tiny_plugin, tmp_path):
    assert "brainscore_vision" not in sys.modules
    mod = _import_plugin_model(tiny_plugin, "plugin_tiny_model")
    assert mod.get_layers("mmcr_tiny") == ["layers.0", "layers.1", "layers.2"]
    assert mod.region_layer_map() == {"V1": "layers.0", "V2": "layers.1", "V4": "layers.1", "IT": "layers.2"}
    with pytest.raises(ImportError):  # get_model is the one place that needs Brain-Score
        mod.get_model("mmcr_tiny")
    images = generated_stimuli(5, 96, seed=2)
    paths = []
    for i, img in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(paths[-1])
    backbone, src = load_pretrained(tiny_run)
    tf = eval_transform_for(src, size=16, resize=16)
    assert torch.equal(torch.from_numpy(mod.preprocess(paths)), tf(images))
    layers = mod.get_layers("mmcr_tiny") + ["pool"]
    ours = layer_features(plain_network(backbone), images, layers, transform=tf)
    theirs = layer_features(mod.build_network(), images, layers, transform=mod.preprocess_tensor)
    for layer in layers:
        torch.testing.assert_close(theirs[layer], ours[layer], rtol=1e-6, atol=1e-6)
    assert not mod.build_network().training


def test_weights_sha256_is_checked_at_load_and_a_weights_url_is_fetched(tmp_path):
    hosted = tmp_path / "hosted.safetensors"
    out = tmp_path / "p"
    export_brainscore_plugin("random:resnet_tiny", out, "tiny_random", image_size=32, n_stimuli=4,
                             weights_url=hosted.as_uri())
    (out / "weights.safetensors").rename(hosted)  # a submission without the weights: fetched at load
    mod = _import_plugin_model(out, "plugin_sha_model")
    mod.build_network()
    assert (out / "weights.safetensors").read_bytes() == hosted.read_bytes()
    blob = bytearray((out / "weights.safetensors").read_bytes())
    blob[-1] ^= 1
    (out / "weights.safetensors").write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="sha256 .* expected .*damaged or was replaced"):
        mod.load_weights()


def test_torchvision_resnet_plugin_with_cifar_stem_and_given_map(tmp_path):
    """A torchvision ResNet with the CIFAR stem (random:<arch>:cifar) and a given map: the plugin rebuilds it."""
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"V1": "layer1", "V2": "layer2", "V4": "layer3", "IT": "layer4.1"}))
    out = tmp_path / "r18"
    export_brainscore_plugin("random:resnet18:cifar", out, "r18_cifar", region_layer_map=mapping, image_size=32,
                             n_stimuli=4, seed=4)
    plugin = json.loads((out / "plugin.json").read_text())
    assert plugin["network"] == {"kind": "torchvision", "arch": "resnet18", "cifar_stem": True}
    assert plugin["layers"] == ["layer1", "layer2", "layer3", "layer4.1"]
    assert plugin["behavioral_readout_layer"] == "avgpool"
    mod = _import_plugin_model(out, "plugin_r18_model")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(4)
        backbone, src = load_pretrained("random:resnet18:cifar")
    images = generated_stimuli(3, 40, seed=1)
    tf = eval_transform_for(src, size=32, resize=32)
    ours = layer_features(plain_network(backbone), images, ["layer2", "layer4.1"], transform=tf)
    theirs = layer_features(mod.build_network(), images, ["layer2", "layer4.1"], transform=mod.preprocess_tensor)
    for layer in ours:
        torch.testing.assert_close(theirs[layer], ours[layer], rtol=1e-5, atol=1e-5)


def test_choose_layers_picks_the_layer_that_predicts_the_recordings(tmp_path):
    """Responses made from one candidate layer's leading principal components are predicted best by that
    layer; regions without recordings take the default; the scores are written beside the plugin."""
    images = generated_stimuli(40, 32, seed=9)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        backbone, src = load_pretrained("random:resnet_tiny")
    feats = layer_features(plain_network(backbone), images, ["conv1", "layers.2"],
                           transform=eval_transform_for(src, size=32, resize=32))
    rng = np.random.default_rng(0)

    def responses(layer):
        pcs = pca_scores(centred_gram(feats[layer]), n_components=4)
        return pcs @ rng.standard_normal((4, 10)) + 0.05 * pcs.std() * rng.standard_normal((40, 10))

    neural = tmp_path / "neural.npz"
    it = responses("layers.2")
    np.savez(neural, images=images.permute(0, 2, 3, 1).numpy(), V1=responses("conv1"),
             IT=np.stack([it, it + 0.1 * it.std() * rng.standard_normal(it.shape)]))
    out = tmp_path / "chosen"
    meta = export_brainscore_plugin("random:resnet_tiny", out, "tiny_chosen", choose_layers_from=neural,
                                    candidate_layers=["conv1", "layers.2"], image_size=32)
    assert meta["region_layer_map"] == {"V1": "conv1", "V2": "layers.1", "V4": "layers.1", "IT": "layers.2"}
    scores = json.loads((out / "layer_scores.json").read_text())
    assert scores["default_for"] == ["V2", "V4"] and scores["IT"]["by"] == "ceiled_score"
    assert scores["V1"]["by"] == "score" and scores["V1"]["layers"]["conv1"]["n_splits"] == 10
    assert scores["IT"]["layers"]["layers.2"]["score"] > scores["IT"]["layers"]["conv1"]["score"]
    assert meta["spectra"]["layers"]["conv1"]["n_stimuli"] == 40 and meta["layer_choice"] == scores


def test_gram_spectrum_and_pca_match_direct_computation():
    x = torch.randn(20, 300, dtype=torch.float64) @ torch.randn(300, 300, dtype=torch.float64)
    gram = centred_gram(x.float(), chunk=64)
    np.testing.assert_allclose(spectrum_from_gram(gram)[:19], eigenspectrum(x.float())[:19], rtol=1e-4)
    scores = pca_scores(gram)
    xc = (x - x.mean(0)).numpy()
    np.testing.assert_allclose(scores @ scores.T, xc @ xc.T, rtol=1e-4, atol=1e-2 * np.abs(xc @ xc.T).max() * 1e-4)


@pytest.mark.parametrize("identifier, message", [
    ("mmcr-resnet50", "contains a hyphen, which Brain-Score's submission refuses; use underscores ('mmcr_resnet50')"),
    ("my model", "not one Brain-Score can register"),
    ("model['x']", "not one Brain-Score can register"),
    ("_hidden", "not one Brain-Score can register"),
    ("my_resnet50_tutorial", "names Brain-Score's tutorial model"),
])  # fmt: skip
def test_identifiers_brainscore_refuses(identifier, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        check_identifier(identifier)


def _err(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_bad_input_is_one_line(tmp_path, capsys):
    bs = ["export", "brainscore"]
    good = [*bs, "random:resnet_tiny", str(tmp_path / "ok"), "--image-size", "32", "--stimuli", "4"]
    assert "hyphen" in _err(capsys, [*good, "--identifier", "bad-name"])
    bad_map = tmp_path / "bad.json"
    bad_map.write_text(json.dumps({"V1": "layers.0", "V2": "layers.1", "V4": "layers.9", "IT": "layers.2"}))
    err = _err(capsys, [*good, "--identifier", "x", "--region-layer-map", str(bad_map)])
    assert "no layer 'layers.9'; it has conv1, bn1, relu, layers, layers.0, layers.1, layers.2, pool" in err
    bad_map.write_text(json.dumps({"V1": "layers.0", "V2": "layers.1", "V4": "layers.1"}))
    assert "lacks IT; map each of V1, V2, V4, IT to a layer" in _err(capsys, [*good, "--identifier", "x",
                                                                              "--region-layer-map", str(bad_map)])
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    err = _err(capsys, [*bs, "random:resnet_tiny", str(full), "--identifier", "x"])
    assert "exists and is not empty; choose another folder or pass --force" in err
    assert (full / "keep.txt").read_text() == "mine"
    empty_run = tmp_path / "run"
    (empty_run / "checkpoints").mkdir(parents=True)
    assert "no checkpoints in" in _err(capsys, [*bs, str(empty_run), str(tmp_path / "o2"), "--identifier", "x"])
    assert "unexpected arguments" in _err(capsys, ["export", "random:resnet_tiny", str(tmp_path / "a.pt"), "extra"])
    neural = tmp_path / "n.npz"
    np.savez(neural, images=np.zeros((12, 8, 8, 3), np.uint8), V9=np.zeros((12, 3)))
    assert "unknown array(s) V9" in _err(capsys, [*good, "--identifier", "x", "--choose-layers", str(neural)])
    np.savez(neural, images=np.zeros((12, 8, 8, 3), np.uint8), V1=np.zeros((12, 3)))
    assert "leave --stimuli out" in _err(capsys, [*good, "--identifier", "x", "--choose-layers", str(neural)])
    assert "--layers names the candidates of --choose-layers" in _err(capsys, [*good, "--identifier", "x", "--layers",
                                                                               "layers.0"])
    assert not (tmp_path / "ok").exists() and not (tmp_path / "o2").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_force_replaces_a_plugin_and_plain_export_still_works(tmp_path, capsys):
    out = tmp_path / "p"
    out.mkdir()
    (out / "old.txt").write_text("old")
    assert main(["export", "brainscore", "random:resnet_tiny", str(out), "--identifier", "tiny", "--image-size", "32",
                 "--stimuli", "4", "--force"]) == 0
    assert not (out / "old.txt").exists() and (out / "weights.safetensors").exists()
    assert "wrote Brain-Score plugin 'tiny'" in capsys.readouterr().out
    assert main(["export", "random:resnet_tiny", str(tmp_path / "b.safetensors")]) == 0
    assert (tmp_path / "b.safetensors").stat().st_size > 0
    assert set(REGIONS) == {"V1", "V2", "V4", "IT"}
