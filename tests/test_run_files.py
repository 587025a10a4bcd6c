"""Files a run keeps: atomic writes, permissions that follow the umask, a full disk that loses nothing,
checkpoint rotation, and corrupt checkpoints moved aside instead of outranking good ones."""

import errno
import os
import stat

import pytest
import torch

from mmcr.rundir import layout
from mmcr.rundir.checkpoint import CheckpointError, find_checkpoint, load_latest, read_checkpoint, save_checkpoint
from mmcr.rundir.files import RunFileError, save_torch_atomic, write_text_atomic


def _names(run):
    return sorted(p.name for p in (run / "checkpoints").glob("*.pt"))


def test_keep_last_n_and_newest_valid(tmp_path):
    for step in (10, 20, 30, 40):
        save_checkpoint({"step": step, "model": {"w": torch.ones(2) * step}}, tmp_path, step, keep=2)
    assert _names(tmp_path) == ["ckpt_00000030.pt", "ckpt_00000040.pt"]
    # a corrupt newest file (say, copied half-way by a user) is skipped with a warning, never deleted by a reader
    (tmp_path / "checkpoints" / "ckpt_00000050.pt").write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="not a readable checkpoint"):
        state, path = load_latest(tmp_path)
    assert state["step"] == 40 and path.name == "ckpt_00000040.pt"
    assert (tmp_path / "checkpoints" / "ckpt_00000050.pt").exists()


def test_corrupt_checkpoints_are_moved_aside_and_never_outrank_good_ones(tmp_path):
    for step in (10, 20):
        save_checkpoint({"step": step}, tmp_path, step, keep=2)
    for step in (30, 40):  # truncated copies with higher step numbers
        good = (tmp_path / "checkpoints" / "ckpt_00000020.pt").read_bytes()
        (tmp_path / "checkpoints" / f"ckpt_{step:08d}.pt").write_bytes(good[: len(good) // 2])
    with pytest.warns(UserWarning, match="moved it to"):
        state, _ = load_latest(tmp_path, move_corrupt=True)
    assert state["step"] == 20
    assert sorted(p.name for p in (tmp_path / "checkpoints" / layout.CORRUPT_DIR).iterdir()) == [
        "ckpt_00000030.pt", "ckpt_00000040.pt"]
    # the rotation now keeps the new checkpoints instead of deleting them in favour of corrupt files
    save_checkpoint({"step": 24}, tmp_path, 24, keep=2)
    save_checkpoint({"step": 28}, tmp_path, 28, keep=2)
    assert _names(tmp_path) == ["ckpt_00000024.pt", "ckpt_00000028.pt"]
    assert read_checkpoint(tmp_path / "checkpoints" / "ckpt_00000028.pt")["step"] == 28


def test_the_file_just_written_survives_rotation_even_when_older_by_step(tmp_path):
    save_checkpoint({"step": 50}, tmp_path, 50, keep=1)
    save_checkpoint({"step": 8}, tmp_path, 8, keep=1)
    assert "ckpt_00000008.pt" in _names(tmp_path)


def test_unreadable_sources_are_one_line_errors(tmp_path):
    data = tmp_path / "features.npy"
    data.write_bytes(b"\x93NUMPY not a checkpoint")
    with pytest.raises(CheckpointError, match="is not a readable checkpoint"):
        find_checkpoint(data)
    torch.save({"weights": 1}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not an mmcr checkpoint"):
        find_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="no checkpoints"):
        find_checkpoint(tmp_path / "run")
    (tmp_path / "run" / "checkpoints" / "ckpt_00000001.pt").write_bytes(b"x")
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="none of the checkpoints"):
        find_checkpoint(tmp_path / "run")


def test_atomic_write_leaves_no_partial_file(tmp_path):
    class Boom:
        def __reduce__(self):
            raise RuntimeError("fails while pickling")

    target = tmp_path / "x.pt"
    save_torch_atomic({"a": 1}, target)
    with pytest.raises(RunFileError, match="the previous one is kept"):
        save_torch_atomic({"b": Boom()}, target)
    assert torch.load(target) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]


def test_disk_full_keeps_the_previous_checkpoint_and_says_so(tmp_path, monkeypatch):
    save_checkpoint({"step": 4, "w": torch.ones(100)}, tmp_path, 4, keep=3)
    real_fdopen = os.fdopen

    class FullDisk:
        """A file whose writes fail like a full disk's after the first few bytes."""

        def __init__(self, f):
            self.f, self.n = f, 0

        def write(self, b):
            self.n += len(b)
            if self.n > 64:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(b)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: FullDisk(real_fdopen(fd, mode)))
    with pytest.raises(RunFileError, match=r"disk full while writing .*ckpt_00000008.pt .*free space") as e:
        save_checkpoint({"step": 8, "w": torch.ones(100)}, tmp_path, 8, keep=3)
    assert "\n" not in str(e.value)
    monkeypatch.undo()
    assert _names(tmp_path) == ["ckpt_00000004.pt"]
    assert read_checkpoint(tmp_path / "checkpoints" / "ckpt_00000004.pt")["step"] == 4
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]  # no temp files left


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        p = write_text_atomic(tmp_path / "a.txt", "x")
        c = save_checkpoint({"step": 1}, tmp_path, 1, keep=1)
    finally:
        os.umask(old)
    for path in (p, c):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, oct(path.stat().st_mode)
