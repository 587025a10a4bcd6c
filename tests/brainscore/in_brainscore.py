"""Runs inside the Brain-Score environment (brainscore-vision 2.4.x, no mmcr): installs each exported plugin
folder as brainscore_vision/models/<dir>, loads it through brainscore_vision.load_model (the plugin is found
by its model_registry line, as Brain-Score finds every plugin), runs the plugin's own test.py, and records
the activations Brain-Score's PytorchWrapper gives for the stimulus files: every committed layer and the
behavioural readout layer, and the recording of each region through the ModelCommitment.

    python in_brainscore.py --stimuli DIR --out activations.npz PLUGIN_DIR [PLUGIN_DIR ...]

Used by tests/brainscore/check_plugins.py (make test-brainscore), which compares them with mmcr's extractor.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("RESULTCACHING_DISABLE", "1")  # no activation cache: every call runs the model
os.environ.setdefault("BS_INSTALL_DEPENDENCIES", "no")  # installed explicitly below, with the output checked

import brainscore_vision  # noqa: E402
import numpy as np  # noqa: E402
from brainscore_core.supported_data_standards.brainio.stimuli import StimulusSet  # noqa: E402

REGIONS = ("V1", "V2", "V4", "IT")


def _install(plugin: Path, models_dir: Path) -> Path:
    """Copy the plugin where brainscore_vision looks for plugins and install its setup.py offline."""
    target = models_dir / plugin.name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(plugin, target)
    res = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-build-isolation", "--quiet",
                          str(target)], capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"pip could not install {target} offline:\n{res.stdout}\n{res.stderr}")
    return target


def _by_path(assembly, paths: list[str]) -> np.ndarray:
    """(n_stimuli, n_neuroids) values of an assembly, rows in the order of ``paths``."""
    if "time_bin" in assembly.dims:
        assembly = assembly.squeeze("time_bin", drop=True) if assembly.sizes["time_bin"] == 1 else assembly
    assembly = assembly.transpose("presentation", "neuroid")
    where = {str(p): i for i, p in enumerate(assembly["stimulus_path"].values)}
    return np.asarray(assembly.values)[[where[p] for p in paths]]


def _check_plugin(identifier: str, target: Path, paths: list[str]) -> dict[str, np.ndarray]:
    model = brainscore_vision.load_model(identifier)
    assert identifier in brainscore_vision.model_registry, f"{identifier} is not in model_registry"
    assert model.identifier == identifier, (model.identifier, identifier)
    plugin = json.loads((target / "plugin.json").read_text())
    layers = list(model.layers)
    assert layers == plugin["layers"], (layers, plugin["layers"])
    readout = plugin["behavioral_readout_layer"]
    out = {}
    acts = model.activations_model(paths, layers=layers + [readout])
    for layer in layers + [readout]:
        out[f"{identifier}/{layer}"] = _by_path(acts.sel(layer=layer), paths)
    stimuli = StimulusSet({"stimulus_id": [f"s{i}" for i in range(len(paths))],
                           "filename": [Path(p).name for p in paths]})
    stimuli.stimulus_paths = {f"s{i}": p for i, p in enumerate(paths)}
    stimuli.identifier = f"mmcr_check_{identifier}"
    region_map = json.loads((target / "region_layer_map" / f"{identifier}.json").read_text())
    for region in REGIONS:
        model.start_recording(region, time_bins=[(70, 170)])
        rec = model.look_at(stimuli)
        layers_seen = set(np.unique(rec["layer"].values))
        assert layers_seen == {region_map[region]}, (region, layers_seen, region_map[region])
        rows = {str(s): i for i, s in enumerate(rec["stimulus_id"].values)}
        rec = rec.squeeze("time_bin", drop=True) if "time_bin" in rec.dims else rec
        vals = np.asarray(rec.transpose("presentation", "neuroid").values)
        out[f"{identifier}/region:{region}"] = vals[[rows[f"s{i}"] for i in range(len(paths))]]
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(target / "test.py")],
                         capture_output=True, text=True, cwd=target)
    if res.returncode != 0:
        raise SystemExit(f"the plugin's own test.py failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    print(f"{identifier}: loaded through model_registry, test.py passed ({res.stdout.strip().splitlines()[-1]})")
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("plugins", nargs="+", type=Path)
    ap.add_argument("--stimuli", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    models_dir = Path(brainscore_vision.__file__).parent / "models"
    paths = sorted(str(p) for p in args.stimuli.glob("*.png"))
    results: dict[str, np.ndarray] = {}
    for plugin in args.plugins:
        identifier = json.loads((plugin / "plugin.json").read_text())["identifier"]
        target = _install(plugin, models_dir)
        try:
            results.update(_check_plugin(identifier, target, paths))
        finally:
            shutil.rmtree(target, ignore_errors=True)
            dist = "mmcr-brainscore-" + identifier.replace("_", "-").replace(".", "-").lower()
            subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "--quiet", dist], capture_output=True)
    np.savez(args.out, paths=np.array(paths), **results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
