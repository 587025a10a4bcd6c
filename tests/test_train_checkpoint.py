import torch

from mmcr.train.checkpoint import load_latest, save_atomic, save_checkpoint


def test_keep_last_n_and_newest_valid(tmp_path):
    for step in (10, 20, 30, 40):
        save_checkpoint({"step": step, "model": {"w": torch.ones(2) * step}}, tmp_path, step, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("*.pt"))
    assert names == ["ckpt_00000030.pt", "ckpt_00000040.pt"]
    # a corrupt newest file (say, copied half-way by a user) is skipped with a warning
    (tmp_path / "checkpoints" / "ckpt_00000050.pt").write_bytes(b"not a checkpoint")
    import pytest

    with pytest.warns(UserWarning, match="skipping"):
        state, path = load_latest(tmp_path)
    assert state["step"] == 40 and path.name == "ckpt_00000040.pt"


def test_atomic_write_leaves_no_partial_file(tmp_path):
    class Boom:
        def __reduce__(self):
            raise RuntimeError("fails while pickling")

    target = tmp_path / "x.pt"
    save_atomic({"a": 1}, target)
    try:
        save_atomic({"b": Boom()}, target)
    except RuntimeError:
        pass
    assert torch.load(target) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]
