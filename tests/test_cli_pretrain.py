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


def test_report_rewrite_keeps_evaluation_lines(tmp_path):
    from mmcr.train.report import write_report

    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": -3.0}\n')
    (tmp_path / "report.md").write_text("# old\n- 2026-01-01 · eval knn digits: top1 90.00 · knn_digits.json\n")
    text = write_report(tmp_path).read_text()
    assert "## Evaluations" in text and "· eval knn digits: top1 90.00" in text
    assert "![loss](loss.png)" in text
