"""``make test-brainscore``: exported plugins checked against the real Brain-Score library.

In mmcr's environment: make three model sources (a 2-step digits run: small ResNet with the CIFAR stem,
16 px; a ResNet-50 with the CIFAR stem saved as a run checkpoint: the authors' CIFAR-10 recipe's
architecture, random weights with BatchNorm statistics from two train-mode passes, 32 px; and
``random:resnet50``, 224 px: torchvision's weights cannot be downloaded offline, the architecture and
preprocessing are those of ``torchvision:resnet50``), export each with ``mmcr export brainscore``, write
generated stimuli as PNG files (square and non-square), and take mmcr's own features of every committed
layer and the readout layer (``mmcr.evaluate.features.layer_features`` with the model's eval view). In the
Brain-Score environment (``--brainscore-python``): tests/brainscore/in_brainscore.py loads the plugins
through ``brainscore_vision.load_model`` and records their activations. Then both are compared.

    python tests/brainscore/check_plugins.py --brainscore-python ~/.cache/mmcr/brainscore-venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mmcr.cli import main as mmcr_main
from mmcr.evaluate.brainscore import generated_stimuli, plain_network
from mmcr.evaluate.features import eval_transform_for, layer_features
from mmcr.evaluate.sources import load_pretrained
from mmcr.models import build_encoder

HERE = Path(__file__).resolve().parent
RTOL = 1e-5  # max |brainscore - mmcr| / max |mmcr| per layer: float32 rounding, not a different computation


def _digits_run(work: Path) -> Path:
    from mmcr.run.config import load_config
    from mmcr.train import train

    cfg = load_config("digits", [f"out={work / 'digits-run'}", "train.max_steps=2", "train.progress=false",
                                 "eval.knn_every_epochs=0"])
    train(cfg)
    return work / "digits-run"


def _cifar_resnet50_run(work: Path) -> Path:
    from mmcr.run.config import load_config
    from mmcr.rundir import save_checkpoint

    cfg = load_config("cifar10", [])
    torch.manual_seed(1)
    enc = build_encoder(cfg.model)
    enc.train()
    with torch.no_grad():  # BatchNorm statistics that are not the init's zeros and ones
        for _ in range(2):
            enc.backbone(torch.randn(8, 3, 32, 32) * 1.5 + 0.2)
    run = work / "cifar-resnet50-run"
    save_checkpoint({"config": cfg.to_dict(), "model": enc.state_dict(), "step": 0}, run, 0, keep=0)
    return run


def _stimuli(work: Path) -> dict[tuple[int, int], tuple[torch.Tensor, list[str]]]:
    """PNG files of generated images in two shapes; returns {shape: (uint8 images, paths)}."""
    folder = work / "stimuli"
    folder.mkdir()
    groups = {(256, 256): generated_stimuli(8, 256, seed=5), (256, 192): generated_stimuli(4, 256, seed=6)[..., 32:224]}
    out = {}
    for (h, w), images in groups.items():
        paths = []
        for i, img in enumerate(images):
            path = folder / f"stim_{h}x{w}_{i:02d}.png"
            Image.fromarray(img.permute(1, 2, 0).contiguous().numpy()).save(path)
            paths.append(str(path))
        out[(h, w)] = (images, paths)
    return out


def _mmcr_features(source: str, plugin: Path, stimuli) -> dict[str, np.ndarray]:
    meta = json.loads((plugin / "plugin.json").read_text())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the exporter's default seed: random-init sources are the same network
        backbone, model_src = load_pretrained(source)
    size = meta["preprocessing"]["size"]
    tf = eval_transform_for(model_src, size=size, resize=size)
    layers = meta["layers"] + [meta["behavioral_readout_layer"]]
    rows: dict[str, dict[str, np.ndarray]] = {}
    for images, paths in stimuli.values():
        feats = layer_features(plain_network(backbone), images, layers, transform=tf)
        for layer, f in feats.items():
            for p, row in zip(paths, f.numpy()):
                rows.setdefault(layer, {})[p] = row
    return {layer: np.stack([by_path[p] for p in sorted(by_path)]) for layer, by_path in rows.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--brainscore-python", required=True, help="python of the environment with brainscore-vision")
    ap.add_argument("--work", type=Path, default=None, help="folder for runs, plugins and stimuli (default: temp)")
    args = ap.parse_args()
    t0 = time.time()
    work = args.work or Path(tempfile.mkdtemp(prefix="mmcr-brainscore-check-"))
    work.mkdir(parents=True, exist_ok=True)
    code = _check(args.brainscore_python, work, t0)
    if code == 0 and args.work is None:
        shutil.rmtree(work, ignore_errors=True)  # kept when the check fails, to look at
    return code


def _check(brainscore_python: str, work: Path, t0: float) -> int:
    cases = {"mmcr_digits_tiny": str(_digits_run(work)), "mmcr_cifar_resnet50": str(_cifar_resnet50_run(work)),
             "random_resnet50": "random:resnet50"}
    plugins = {}
    for identifier, source in cases.items():
        plugins[identifier] = work / "plugins" / identifier
        code = mmcr_main(["export", "brainscore", source, str(plugins[identifier]), "--identifier", identifier,
                          "--stimuli", "24", "--force"])
        if code != 0:
            return code
    stimuli = _stimuli(work)
    ours = {ident: _mmcr_features(src, plugins[ident], stimuli) for ident, src in cases.items()}
    t_bs = time.time()
    out = work / "brainscore_activations.npz"
    env_cmd = [brainscore_python, str(HERE / "in_brainscore.py"), "--stimuli", str(work / "stimuli"),
               "--out", str(out), *map(str, plugins.values())]
    res = subprocess.run(env_cmd)
    if res.returncode != 0:
        print("the Brain-Score side failed (see above)", file=sys.stderr)
        return 1
    t_bs = time.time() - t_bs
    theirs = np.load(out)
    assert [Path(p).name for p in theirs["paths"]] == sorted(Path(p).name for g in stimuli.values() for p in g[1])
    failures, rows = [], []
    for ident in cases:
        meta = json.loads((plugins[ident] / "plugin.json").read_text())
        region_map = json.loads((plugins[ident] / "region_layer_map" / f"{ident}.json").read_text())
        checks = [(layer, layer) for layer in ours[ident]] + [(f"region:{r}", region_map[r]) for r in region_map]
        for key, layer in checks:
            ref, got = ours[ident][layer], theirs[f"{ident}/{key}"]
            diff = float(np.abs(ref - got).max()) if ref.shape == got.shape else float("inf")
            scale = float(np.abs(ref).max())
            rel = diff / scale if scale > 0 else diff
            rows.append((ident, meta["preprocessing"]["size"], key, ref.shape[1], diff, rel))
            if not rel <= RTOL:
                failures.append(f"{ident} {key}: max |diff| {diff:.3g} (relative {rel:.3g}), shapes {ref.shape} "
                                f"{got.shape}")
    print(f"\n{'plugin':<22}{'px':>5}  {'layer / region':<18}{'units':>9}{'max |diff|':>13}{'relative':>11}")
    for ident, px, key, units, diff, rel in rows:
        print(f"{ident:<22}{px:>5}  {key:<18}{units:>9}{diff:>13.3g}{rel:>11.3g}")
    print(f"\n{len(rows)} comparisons on {sum(len(g[1]) for g in stimuli.values())} stimuli; Brain-Score side "
          f"{t_bs:.0f} s, total {time.time() - t0:.0f} s; work folder {work}")
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    print("brainscore check passed: every committed layer, the readout layer and every region's recording equal "
          f"mmcr's features (relative tolerance {RTOL})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
