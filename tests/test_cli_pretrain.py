import json

from mmcr.cli import main


def test_pretrain_cli_writes_summary_and_report(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["pretrain", "--out", str(out), "--no-progress", "--set", "train.max_steps=6",
               "--set", "eval.knn_every_epochs=0", "--set", "augment.views=4"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    for key in ("knn_learned", "knn_random_init", "knn_raw_pixels"):
        assert 0.0 <= summary[key] <= 1.0
    printed = capsys.readouterr().out
    assert "random-init encoder" in printed and "raw pixels" in printed
    for name in ("config.yaml", "metrics.jsonl", "report.md", "loss.png"):
        assert (out / name).exists(), name
    assert list((out / "checkpoints").glob("ckpt_*.pt"))


def test_pretrain_cli_bad_input_is_one_line(tmp_path, capsys):
    assert main(["pretrain", "--set", "optim.lr=-1", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "optim.lr must be positive" in err
    assert main(["pretrain", "nosuchpreset"]) == 2
    assert "choose one of" in capsys.readouterr().err
    assert main(["pretrain", "--set", "data.name=archive", "--set", "data.root=/nonexistent.tar.gz",
                 "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nonexistent" in err
