"""Checkpoints that survive kills, full disks and corruption, and that are read as data only.

A checkpoint is one ``torch.save``d dict tagged with :data:`CHECKPOINT_FORMAT`, written atomically
(:mod:`mmcr.rundir.files`). The newest ``keep`` are kept. Readers take the newest one that loads; a
resuming run moves unreadable files aside (``checkpoints/corrupt/``) so that they never outrank, and
never cause the rotation to delete, a good checkpoint.

Every checkpoint (and every exported ``.pt``) is loaded with ``torch.load(weights_only=True)``: tensors,
numbers, strings and plain containers, nothing that runs code when unpickled. A file holding anything
else is refused (:class:`UnsafeCheckpointError`), never skipped or moved, and its objects are never
created. Format v1 files hold the numpy RNG state as numpy arrays; those (and only those) are allowed
for v1 files, so old checkpoints keep loading. After loading, the entries a reader needs are checked by
name and type (:data:`WEIGHTS`, :data:`TRAINING`, :data:`DETECTION`) before anything uses them.
"""

from __future__ import annotations

import pickle
import pickletools
import shutil
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch

from mmcr.rundir import layout
from mmcr.rundir.files import save_torch_atomic

CHECKPOINT_FORMAT = "mmcr-checkpoint-v2"  # v2: the numpy RNG state as tensors (v1: numpy arrays)
LEGACY_FORMATS = ("mmcr-checkpoint-v1",)
READABLE_FORMATS = (CHECKPOINT_FORMAT, *LEGACY_FORMATS)


class CheckpointError(ValueError):
    """A checkpoint that cannot be read; the message names the file and what to do."""


class InvalidCheckpointError(CheckpointError):
    """A readable file that is not what the reader needs (a foreign file, a missing or ill-typed entry).
    Unlike an unreadable (truncated) checkpoint it is never skipped or moved aside: it is refused."""


class UnsafeCheckpointError(InvalidCheckpointError):
    """A file that holds Python objects beyond tensors and plain containers: loading it could run code."""


# --------------------------------------------------------------------------------------- entries
def is_state_dict(v) -> bool:
    """A mapping of parameter names to tensors (what ``load_state_dict`` takes)."""
    return isinstance(v, Mapping) and all(isinstance(k, str) and isinstance(t, torch.Tensor) for k, t in v.items())


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


_STATE_DICT = (is_state_dict, "a state dict (a mapping of parameter names to tensors)")
_MAPPING = (lambda v: isinstance(v, Mapping), "a mapping")
_COUNT = (_is_count, "a count (an integer >= 0)")
#: What each entry of a checkpoint must be, checked whenever the entry is present.
ENTRY_TYPES: dict[str, tuple[Callable[[object], bool], str]] = {
    "config": (_MAPPING[0], "a mapping (the run's config)"),
    "model": _STATE_DICT,
    "momentum": (lambda v: v is None or is_state_dict(v), "a state dict or None"),
    "optimizer": (lambda v: isinstance(v, Mapping) and {"state", "param_groups"} <= set(v),
                  "an optimiser state dict (with 'state' and 'param_groups')"),
    "scheduler": _MAPPING,
    "scaler": _MAPPING,
    "step": _COUNT,
    "epoch": _COUNT,
    "batch_in_epoch": _COUNT,
    "iteration": _COUNT,
    "rng": (lambda v: isinstance(v, Mapping) or (isinstance(v, list) and all(isinstance(r, Mapping) for r in v)),
            "a mapping of RNG states (or a list of them, one per rank)"),
    "settings": _MAPPING,
    "data_signature": _MAPPING,
    "world_size": (lambda v: _is_count(v) and v >= 1, "a number of processes (>= 1)"),
}
#: Entries a reader of the weights needs (evaluation, export, analysis, Brain-Score).
WEIGHTS = ("config", "model")
#: Entries a resumed pretraining run needs.
TRAINING = ("config", "model", "optimizer", "scheduler", "scaler", "step", "epoch", "batch_in_epoch", "rng")
#: Entries of a detection fine-tuning checkpoint.
DETECTION = ("model", "optimizer", "iteration", "settings")


def check_entries(state: dict, path: str | Path, require: tuple[str, ...] = ()) -> dict:
    """``state`` when it holds every entry in ``require`` and every known entry has its type, else an
    :class:`InvalidCheckpointError` naming the file and the entries."""
    missing = [k for k in require if k not in state]
    if missing:
        raise InvalidCheckpointError(
            f"{path} is not an mmcr checkpoint (missing {', '.join(map(repr, missing))}); give a checkpoint "
            "written by mmcr (a ckpt_*.pt of a run) or a run directory")
    for key, (ok, what) in ENTRY_TYPES.items():
        if key in state and not ok(state[key]):
            raise InvalidCheckpointError(
                f"{path}: entry {key!r} is a {type(state[key]).__name__}, not {what}; the file is damaged or "
                "not an mmcr checkpoint (give a ckpt_*.pt written by mmcr)")
    return state


# --------------------------------------------------------------------------------------- loading
def _legacy_globals() -> list:
    """What format v1 checkpoints hold besides tensors: the numpy RNG state (a uint32 array)."""
    try:  # where numpy keeps _reconstruct depends on its major version
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1
        from numpy.core.multiarray import _reconstruct
    out = [np.ndarray, np.dtype, (_reconstruct, "numpy.core.multiarray._reconstruct"),
           (_reconstruct, "numpy._core.multiarray._reconstruct")]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        out.append(dtypes.UInt32DType)
    return out


_LEGACY_NAMES = {"numpy.ndarray", "numpy.dtype", "numpy.core.multiarray._reconstruct",
                 "numpy._core.multiarray._reconstruct", "numpy.dtypes.UInt32DType"}


def _unsafe_globals(path: Path) -> list[str]:
    """The Python objects a refused file would import, found by reading its pickle opcodes (nothing
    runs): torch's own scan for ``torch.save`` archives, :mod:`pickletools` for raw pickles."""
    if zipfile.is_zipfile(path):
        try:
            return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        except Exception:  # a damaged archive
            return []

    names: list[str] = []  # from complete pickles only: random bytes can look like an opcode or two
    try:
        with open(path, "rb") as f:
            while f.peek(1):  # torch's legacy format is several pickles in a row
                found, strings = [], []
                for op, arg, _ in pickletools.genops(f):
                    if op.name in ("GLOBAL", "INST"):
                        found.append(str(arg).replace(" ", "."))
                    elif op.name == "STACK_GLOBAL":
                        found.append(".".join(strings[-2:]) or "an object built from the stack")
                    elif isinstance(arg, str):
                        strings.append(arg)
                names += found  # genops ended at STOP: a whole pickle
    except Exception:  # not a pickle (or raw tensor bytes after one): what was found so far
        pass
    return names


def load_torch_data(path: str | Path, map_location: str | torch.device = "cpu", what: str = "checkpoint"):
    """``torch.load(path, weights_only=True)`` with one-line errors: a file holding Python objects raises
    :class:`UnsafeCheckpointError` (they are never created), an unreadable one :class:`CheckpointError`.
    numpy arrays are allowed only to read format v1 checkpoints' RNG states."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{what} {path} not found; give a run directory or an existing .pt file")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; give a {what} file, or the run directory as the source")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # raw pickles: refused below
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        names = _unsafe_globals(path)
        if names and set(names) <= _LEGACY_NAMES and zipfile.is_zipfile(path):
            try:
                with torch.serialization.safe_globals(_legacy_globals()):
                    state = torch.load(path, map_location=map_location, weights_only=True)
            except pickle.UnpicklingError:
                state = None  # other numpy types than v1's RNG state
            if not (isinstance(state, dict) and state.get("format") in LEGACY_FORMATS):
                raise UnsafeCheckpointError(
                    f"{path} holds numpy arrays, which only mmcr's format v1 checkpoints may; "
                    "re-save its arrays as tensors (torch.from_numpy)") from None
            return state
        if names:
            shown = ", ".join(sorted(set(names))[:4])
            raise UnsafeCheckpointError(
                f"refusing {path}: it holds Python objects ({shown}), not only tensors and plain containers, and "
                f"loading it could run code; mmcr reads a {what} as data only (use one written by mmcr, or "
                "re-save plain tensors with torch.save)") from None
        raise _unreadable(path, e, what) from None
    except Exception as e:  # truncated zip, random bytes, a data file given by mistake, ...
        raise _unreadable(path, e, what) from e


def _unreadable(path: Path, e: BaseException, what: str) -> CheckpointError:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    unsupported = [ln for ln in lines if ln.startswith("Unsupported")]  # torch's weights-only refusal
    reason = (unsupported or lines or [type(e).__name__])[0].split(". ")[0]
    return CheckpointError(f"{path} is not a readable {what} ({reason[:160]}); give an mmcr checkpoint "
                           "or run directory")


def save_checkpoint(state: dict, run_dir: str | Path, step: int, keep: int) -> Path:
    """Write ``checkpoints/ckpt_<step>.pt`` atomically, then delete all but the newest ``keep``
    (``keep`` <= 0: keep all). The file just written is never deleted."""
    path = layout.checkpoint_path(run_dir, step)
    save_torch_atomic({"format": CHECKPOINT_FORMAT, **state}, path, what=f"checkpoint {path.name}")
    if keep > 0:
        others = [p for _, p in layout.list_checkpoints(run_dir) if p != path]
        for old in others[: max(len(others) - (keep - 1), 0)]:
            old.unlink(missing_ok=True)
    return path


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", require: tuple[str, ...] = ()) -> dict:
    """Load one checkpoint file as data and check its format and entries (``require``: the entries the
    caller needs, e.g. :data:`WEIGHTS`). A missing or unreadable file raises :class:`CheckpointError`;
    a foreign or unsafe one :class:`InvalidCheckpointError`."""
    path = Path(path)
    state = load_torch_data(path, map_location)
    if not isinstance(state, dict) or "format" not in state:
        raise InvalidCheckpointError(f"{path} is not an mmcr checkpoint (missing 'format'); give a checkpoint "
                                     "written by mmcr (a ckpt_*.pt of a run) or a run directory")
    if state["format"] not in READABLE_FORMATS:
        raise InvalidCheckpointError(f"{path} is not an mmcr checkpoint (format {state['format']!r}; this version "
                                     f"reads {', '.join(map(repr, READABLE_FORMATS))})")
    return check_entries(state, path, require)


def _move_aside(path: Path, run_dir: Path, folder: str) -> Path:
    dest_dir = layout.checkpoint_dir(run_dir) / folder
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / path.name
    n = 1
    while dest.exists():
        dest = dest_dir / f"{path.name}.{n}"
        n += 1
    shutil.move(str(path), dest)
    return dest


def load_latest(
    run_dir: str | Path, map_location: str | torch.device = "cpu", move_corrupt: bool = False,
    require: tuple[str, ...] = (),
) -> tuple[dict, Path] | None:
    """The newest checkpoint of ``run_dir`` that loads and holds the entries in ``require``, or None.
    Unreadable (truncated, corrupt) files are skipped with a warning; with ``move_corrupt`` (a run
    resuming in its own directory) they are moved to ``checkpoints/corrupt/``. A foreign or unsafe file
    (:class:`InvalidCheckpointError`) is never skipped: it is refused, and left where it is."""
    run_dir = Path(run_dir)
    for _, path in reversed(layout.list_checkpoints(run_dir)):
        try:
            return read_checkpoint(path, map_location, require), path
        except InvalidCheckpointError as e:
            raise type(e)(f"{e}; (to use the run's other checkpoints, move it out of "
                          f"{layout.checkpoint_dir(run_dir)})") from None
        except CheckpointError as e:
            if move_corrupt:
                dest = _move_aside(path, run_dir, layout.CORRUPT_DIR)
                warnings.warn(f"{e}; moved it to {dest}", stacklevel=2)
            else:
                warnings.warn(f"skipping it: {e}", stacklevel=2)
    return None


def supersede_newer(run_dir: str | Path, step: int) -> list[Path]:
    """Move checkpoints newer than ``step`` to ``checkpoints/superseded/`` (a run resumed from an
    older checkpoint starts a new timeline; the old one's files must not outrank it)."""
    run_dir = Path(run_dir)
    return [_move_aside(p, run_dir, layout.SUPERSEDED_DIR) for s, p in layout.list_checkpoints(run_dir) if s > step]


def find_checkpoint(source: str | Path, map_location: str | torch.device = "cpu",
                    require: tuple[str, ...] = WEIGHTS) -> tuple[dict, Path]:
    """A checkpoint from a run directory (its newest readable one) or a checkpoint file, read as data
    and holding the entries in ``require`` (default: the config and weights every model reader needs).
    The one safe way to read a model's weights: evaluation, export, analysis and Brain-Score use it."""
    path = Path(source)
    if path.is_dir():
        if not layout.list_checkpoints(path):
            raise CheckpointError(f"no checkpoints in {layout.checkpoint_dir(path)}; give a checkpoint file or a "
                                  "run directory that has trained at least to its first checkpoint")
        found = load_latest(path, map_location, require=require)
        if found is None:
            raise CheckpointError(f"none of the checkpoints in {layout.checkpoint_dir(path)} can be read; resume the "
                                  "run (--resume auto) to write a new one")
        return found
    return read_checkpoint(path, map_location, require), path
