"""Score a candidate recipe for the embedded offline default on the validation split only.

Each seed trains ``mmcr pretrain <preset>`` with the given ``--set`` overrides (the test split is not
loaded: ``eval.final=false``), then measures weighted kNN top-1 on the validation split the trainer
carved from the training split (its size and draw follow the seed) for the learned backbone, the
random-init twin and raw pixels, at a few (k, T) pairs. The memory bank is the rest of the training
split, as in the online monitor. One JSON line per seed and one mean line go to stdout and, with
``--log``, are appended to a file, so candidates can be compared on validation figures alone.

    PYTHONPATH=src .venv/bin/python benchmarks/digits_recipe_search.py --tag base --seeds 0,1,2
    PYTHONPATH=src .venv/bin/python benchmarks/digits_recipe_search.py --tag ep20 --set train.epochs=20
    PYTHONPATH=src .venv/bin/python benchmarks/digits_recipe_search.py --preset mnist5k --tag m --seeds 0,1
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch

KT = ((5, 0.1), (10, 0.1), (20, 0.1), (50, 0.1), (20, 0.5))


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def score_seed(preset: str, overrides: list[str], seed: int, out: Path) -> dict:
    from mmcr.data import load_dataset, split_train_val
    from mmcr.evaluate.features import dataset_features
    from mmcr.evaluate.knn import knn_accuracy
    from mmcr.evaluate.monitor import _Pixels
    from mmcr.evaluate.sources import load_pretrained
    from mmcr.models import build_encoder
    from mmcr.run.config import load_config
    from mmcr.train import train

    cfg = load_config(preset, [*overrides, f"seed={seed}", f"out={out}", "eval.final=false",
                                 "train.progress=false", "train.tensorboard=false"])
    c0, w0 = _cpu_s(), time.perf_counter()
    summary = train(cfg)
    cpu, wall = _cpu_s() - c0, time.perf_counter() - w0
    backbone, src = load_pretrained(out)
    from mmcr.augment import MultiViewAugment

    tf = MultiViewAugment.from_config(cfg.augment, seed=cfg.seed).eval_transform()
    d = cfg.data
    full = load_dataset(d.name, root=d.root, split=d.train_split, cache_dir=d.cache_dir, **d.options)
    bank, val = split_train_val(full, d.val_fraction, cfg.seed)
    torch.manual_seed(cfg.seed)
    random_bb = build_encoder(cfg.model).backbone.eval()
    row = {"seed": seed, "steps": summary["steps"], "train_wall_s": round(wall, 1), "train_cpu_s": round(cpu, 1),
           "n_val": len(val)}
    for name, model in (("learned", backbone), ("random", random_bb), ("pixels", _Pixels())):
        fb, yb = dataset_features(model, bank, tf)
        fv, yv = dataset_features(model, val, tf)
        for k, t in KT:
            acc = knn_accuracy(fb, yb, fv, yv, k=k, temperature=t, num_classes=10)["top1"]
            row[f"{name}_k{k}_T{t:g}"] = round(acc, 3)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tag", required=True)
    ap.add_argument("--preset", default="digits", help="the preset the overrides apply to")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override a.b=value")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", type=Path, default=Path("/tmp/mmcr-digits-search"))
    ap.add_argument("--log", type=Path, default=None, help="append the JSON lines to this file")
    args = ap.parse_args()
    rows = []
    for s in (int(x) for x in args.seeds.split(",")):
        row = {"tag": args.tag, "preset": args.preset, "overrides": args.overrides,
               **score_seed(args.preset, args.overrides, s, args.out / f"{args.tag}-s{s}")}
        rows.append(row)
        print(json.dumps(row), flush=True)
    keys = [k for k, v in rows[0].items() if isinstance(v, (int, float)) and k != "seed"]
    mean = {"tag": args.tag, "overrides": args.overrides, "mean_over_seeds": [r["seed"] for r in rows],
            **{k: round(sum(r[k] for r in rows) / len(rows), 3) for k in keys}}
    print(json.dumps(mean), flush=True)
    if args.log:
        with open(args.log, "a") as f:
            for r in [*rows, mean]:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
