"""Runs own their directory: one process at a time, never over another run's records unless told to,
outputs never over a run's checkpoints or records, no writes through links, names stay under runs/.
Each case is a row of tests/README.md."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mmcr.cli import main
from mmcr.run.config import ConfigError, load_config
from mmcr.rundir import layout
from mmcr.rundir.metrics import read_metrics
from mmcr.train import train

BASE = [
    "train.batch_size=32", "augment.views=2", "model.projector.hidden=[32]", "model.projector.out_dim=16",
    "train.progress=false", "train.tensorboard=false", "train.log_every_steps=1", "train.threads=2",
    "eval.knn_every_epochs=0", "eval.final=false", "train.max_steps=2",
]
SETS = sum((["--set", a] for a in BASE), [])


def _cfg(out: Path, *extra: str):
    return load_config("digits", BASE + [f"out={out}", *extra])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("own") / "run"
    train(_cfg(out))
    return out


def _copy(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns(".mmcr.lock"))
    return dest


def _snapshot(d: Path) -> dict[str, bytes]:
    files = [p for p in sorted(d.rglob("*")) if p.is_file() and p.name != ".mmcr.lock"]
    return {str(p.relative_to(d)): p.read_bytes() for p in files}


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


def test_a_second_process_on_the_same_run_directory_is_refused_by_name(tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from mmcr.rundir.files import RunLock; l = RunLock(sys.argv[1]); "
         "print('locked', flush=True); time.sleep(120)", str(out)],
        stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")})
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["pretrain", "digits", "--out", str(out), *SETS]) == 2
        err = _err(capsys)
        assert f"{out} is in use by another mmcr run (pid {holder.pid} on" in err and "choose another --out" in err
        assert sorted(p.name for p in out.iterdir()) == [".mmcr.lock"]  # nothing of the refused run
    finally:
        holder.kill()
        holder.wait()
    # a killed holder leaves no stale lock: the kernel released it
    assert main(["pretrain", "digits", "--out", str(out), *SETS]) == 0
    capsys.readouterr()
    assert [r["step"] for r in read_metrics(out) if "loss" in r] == [1, 2]


def test_a_refused_run_leaves_no_folder_behind(tmp_path, capsys):
    out = tmp_path / "new"
    assert main(["pretrain", "digits", "--out", str(out), *SETS, "--set", "data.name=npz",
                 "--set", f"data.root={tmp_path / 'missing.npz'}", "--set", "data.options={}"]) == 2
    assert "npz file not found" in _err(capsys) and not out.exists()


def test_a_new_run_never_starts_over_another_runs_records(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path / "run")
    shutil.rmtree(layout.checkpoint_dir(run))  # history, no checkpoints: the case that lost records before
    (run / layout.EVAL_DIR).mkdir()
    (run / layout.EVAL_DIR / "knn_digits.json").write_text("{}")
    before = _snapshot(run)
    assert main(["pretrain", "digits", "--out", str(run), *SETS]) == 2
    err = _err(capsys)
    assert "already holds a run (config.yaml, metrics.jsonl, summary.json, report.md, eval)" in err
    assert "train.overwrite=true" in err
    # --resume auto on it: no checkpoint of this run (another config) to continue
    assert main(["pretrain", "digits", "--out", str(run), "--resume", "auto", *SETS,
                 "--set", "model.backbone=resnet_small"]) == 2
    assert "holds another run's records" in _err(capsys)
    assert _snapshot(run) == before  # nothing lost or rewritten
    # told to: the old run's files are deleted, the new run owns the directory
    assert main(["pretrain", "digits", "--out", str(run), *SETS, "--set", "model.backbone=resnet_small",
                 "--set", "train.overwrite=true"]) == 0
    assert "deleted the previous run's" in capsys.readouterr().out
    assert not (run / layout.EVAL_DIR).exists() and "resnet_small" in (run / "config.yaml").read_text()
    starts = [r for r in read_metrics(run) if r.get("event") == "start"]
    assert len(starts) == 1 and not starts[0]["resumed"]


def test_overwrite_and_resume_contradict_and_two_resumes_contradict(trained, tmp_path, capsys):
    with pytest.raises(ConfigError, match="train.overwrite=true starts a new run .* cannot go with train.resume=auto"):
        _cfg(tmp_path, "train.overwrite=true", "train.resume=auto")
    ckpt = layout.checkpoint_path(trained, 2)
    assert main(["pretrain", "digits", "--out", str(tmp_path / "r"), "--resume", "auto", *SETS,
                 "--set", f"train.resume={ckpt}"]) == 2
    err = _err(capsys)
    assert f"--resume auto contradicts train.resume={ckpt}" in err
    assert not (tmp_path / "r").exists()


def test_resume_auto_in_the_runs_own_directory_still_works(trained, tmp_path):
    run = _copy(trained, tmp_path / "run")
    summary = train(_cfg(run, "train.resume=auto", "train.max_steps=3"))
    assert summary["steps"] == 3


def test_outputs_never_replace_a_runs_checkpoints_or_records(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path / "run")
    before = _snapshot(run)
    ckpt = layout.checkpoint_path(run, 2)
    for argv, needle in [
        (["export", str(run), str(ckpt)], "inside the checkpoints folder of run"),
        (["export", str(ckpt), str(ckpt)], "inside the checkpoints folder of run"),
        (["export", str(run), str(layout.checkpoint_dir(run) / "corrupt" / "bb.pt")], "inside the checkpoints"),
        (["eval", "knn", str(run), "--out", str(run / "summary.json"), "--no-progress"], "the summary.json of run"),
        (["eval", "linear", str(run), "--out", str(layout.checkpoint_dir(run) / "x.json"), "--no-progress"],
         "inside the checkpoints folder"),
        (["analyze", str(run), "--out", str(run), "--no-progress"], "the report.md of run"),
    ]:
        assert main(argv) == 2, argv
        err = _err(capsys)
        assert "refusing to write" in err and needle in err, err
    assert _snapshot(run) == before
    outside = tmp_path / "bb.pt"
    shutil.copy(ckpt, tmp_path / "c.pt")
    assert main(["export", str(tmp_path / "c.pt"), str(tmp_path / "c.pt")]) == 2
    assert "the model source itself" in _err(capsys)
    assert main(["export", str(run), str(outside)]) == 0  # elsewhere: fine


def test_writes_never_follow_links_out_of_a_run(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path / "received")
    victim = tmp_path / "victim.txt"
    victim.write_text("mine\n")
    (run / "report.md").unlink()
    (run / "report.md").symlink_to(victim)
    assert main(["eval", "knn", str(run), "--no-progress"]) == 2
    assert "is a symbolic link; mmcr never writes a report line through a link" in _err(capsys)
    assert not (run / layout.EVAL_DIR).exists()  # refused before any work or file
    (run / "report.md").unlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run / layout.EVAL_DIR).symlink_to(elsewhere, target_is_directory=True)
    assert main(["eval", "knn", str(run), "--no-progress"]) == 2
    assert "outside" in _err(capsys) and not list(elsewhere.iterdir())
    (run / layout.EVAL_DIR).unlink()
    # a resumed run replaces linked records and plots with files of its own; the targets are untouched
    for name in ("metrics.jsonl", "loss.png", "summary.json"):
        (run / name).unlink()
        (run / name).symlink_to(victim)
    train(_cfg(run, "train.resume=auto", "train.max_steps=3"))
    assert victim.read_text() == "mine\n"
    assert not any((run / n).is_symlink() for n in ("metrics.jsonl", "loss.png", "summary.json"))
    from mmcr.rundir.files import RunFileError, open_append

    with pytest.raises(RunFileError, match="symbolic link"):
        (run / "x.log").symlink_to(victim)
        open_append(run / "x.log")


def test_a_run_name_cannot_leave_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("../../x", "a/b", "..", ".hidden"):
        assert main(["pretrain", "digits", "--set", f"name={name}", *SETS]) == 2
        assert "a run name is one folder name under runs/" in _err(capsys)
    assert not list(tmp_path.iterdir())


def test_partial_files_of_a_killed_run_are_cleaned_when_it_resumes(trained, tmp_path):
    run = _copy(trained, tmp_path / "run")
    partial = [layout.checkpoint_dir(run) / ".ckpt_00000003.pt.abc123.tmp", run / ".config.yaml.x1.tmp",
               run / ".summary.json.zz.tmp"]
    for p in partial:
        p.write_bytes(b"half")
    user_file = run / "notes.tmp"
    user_file.write_text("keep")
    train(_cfg(run, "train.resume=auto", "train.max_steps=3"))
    assert not any(p.exists() for p in partial) and user_file.exists()
