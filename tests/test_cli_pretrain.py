import json

import pytest

from mmcr.cli import main
from mmcr.run.config import read_run_config


def test_pretrain_cli_writes_summary_and_report(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["pretrain", "--out", str(out), "--no-progress", "--set", "train.max_steps=6",
               "--set", "eval.knn_every_epochs=0", "--set", "augment.views=4"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    printed = capsys.readouterr().out
    assert "random-init encoder" in printed and "raw pixels" in printed
    for name in ("config.yaml", "metrics.jsonl", "report.md", "loss.png", "geometry.png"):
        assert (out / name).exists(), name
    assert "## Geometry during training" in (out / "report.md").read_text()  # on by default in mnist5k
    assert list((out / "checkpoints").glob("ckpt_*.pt"))
    assert summary["steps"] == 6 and summary["stopped_by"] == "max_steps"
    # the same question gets the same answer: `mmcr eval knn` on the run (its own k and T) repeats the
    # pretraining summary's learned-encoder figure, in the same unit (percent)
    assert main(["eval", "knn", str(out), "--no-progress"]) == 0
    cfg = read_run_config(out)
    assert cfg.data.name == "mnist5k"  # the offline default
    res = json.loads((out / "eval" / f"knn_{cfg.data.name}.json").read_text())
    assert (res["k"], res["temperature"]) == (summary["knn_k"], summary["knn_temperature"])
    assert res["top1"] == pytest.approx(summary["knn_top1_learned"])
    # raw pixels: the kNN of the run's eval view of the images themselves, computed independently
    from mmcr.augment import MultiViewAugment
    from mmcr.data import load_dataset
    from mmcr.evaluate import knn_accuracy

    tf = MultiViewAugment.from_config(cfg.augment).eval_transform()
    tr = load_dataset(cfg.data.name, split="train", **cfg.data.options)
    te = load_dataset(cfg.data.name, split="test", **cfg.data.options)
    pix = knn_accuracy(tf(tr.images).flatten(1), tr.labels, tf(te.images).flatten(1), te.labels,
                       k=cfg.eval.knn_k, temperature=cfg.eval.knn_temperature)["top1"]
    assert summary["knn_top1_raw_pixels"] == pytest.approx(pix) and pix > 90.0


def test_pretrain_cli_bad_input_is_one_line(tmp_path, capsys):
    assert main(["pretrain", "--set", "optim.lr=-1", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "optim.lr must be > 0" in err
    assert main(["pretrain", "nosuchpreset"]) == 2
    assert "choose one of" in capsys.readouterr().err
    assert main(["pretrain", "--set", "data.name=archive", "--set", "data.root=/nonexistent.tar.gz",
                 "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nonexistent" in err


def test_report_rewrite_keeps_evaluation_lines(tmp_path):
    from mmcr.rundir.report import eval_line, write_report

    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": -3.0}\n')
    line = eval_line("knn", "digits", {"top1": 90.0}, {}, "knn_digits.json")
    (tmp_path / "report.md").write_text(f"# old\n{line}\n")
    text = write_report(tmp_path).read_text()
    assert "## Evaluations" in text and "eval knn digits: top1 90.00" in text
    assert "![loss](loss.png)" in text
