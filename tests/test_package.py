"""The distribution as a user gets it: sdist + wheel that twine accepts, built without deprecation warnings;
the wheel installed into a fresh virtual environment runs `mmcr` from outside the repository.

Installing torch into a new environment for every test run would take minutes, so the new environment sees
the packages of the running interpreter through a ``.pth`` line pointing at a folder of links to them (this
project's own entries left out): pip counts them as installed and resolves the wheel's dependencies from
them with ``--no-index``, while ``mmcr`` itself can only come from the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NAME = "mmcr-toolkit"


def _env() -> dict[str, str]:
    """The environment without anything that would put this checkout's sources on the path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _run(cmd: list, cwd: Path, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=kw.pop("env", _env()), capture_output=True, text=True,
                       timeout=300, **kw)
    assert r.returncode == 0, f"{cmd} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="session")
def dists(tmp_path_factory) -> tuple[Path, str]:
    """(folder with the sdist and the wheel, the build's log), built once from a copy of the sources."""
    src = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: the build uses this environment's setuptools; build itself refuses to run unless it
    # satisfies the project's build-system requirements (no network needed).
    r = _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", out, src], cwd=src)
    return out, r.stdout + r.stderr


def _wheel(dist_dir: Path) -> Path:
    (wheel,) = dist_dir.glob("mmcr_toolkit-*.whl")
    return wheel


def _linked_site_packages(target: Path) -> Path:
    """A folder of links to every entry of this interpreter's site-packages except this project's."""
    target.mkdir()
    for site in dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]):
        for entry in Path(site).iterdir():
            low = entry.name.lower()
            ours = low.startswith("mmcr") or (low.startswith("__editable__") and "mmcr" in low)
            if ours or low.endswith(".pth") or (target / entry.name).exists():
                continue
            (target / entry.name).symlink_to(entry)
    return target


def _fresh_venv(where: Path) -> tuple[Path, Path]:
    """(python, site-packages) of a new virtual environment that sees this interpreter's packages."""
    venv = where / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=where)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=where).stdout.strip())
    (site / "parent_site_packages.pth").write_text(f"{_linked_site_packages(where / 'parent-site')}\n")
    return python, site


def _pip_install(python: Path, *args, cwd: Path) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-index",
                 "--disable-pip-version-check", *args], cwd=cwd)


def test_sdist_and_wheel_pass_twine_without_deprecation_warnings(dists):
    dist_dir, log = dists
    assert "deprecat" not in log.lower(), log
    sdists = list(dist_dir.glob("mmcr_toolkit-*.tar.gz"))
    assert len(sdists) == 1
    _run([sys.executable, "-m", "twine", "check", "--strict", *dist_dir.iterdir()], cwd=dist_dir)
    with zipfile.ZipFile(_wheel(dist_dir)) as z:
        names = set(z.namelist())
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "mmcr/configs/mnist5k.yaml" in names and "mmcr/configs/detection/voc-c4.yaml" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert f"Name: {NAME}\n" in meta and "License-Expression: MIT\n" in meta
    for extra in ("timm", "detection", "video", "webdataset", "docs", "dev"):
        assert f"Provides-Extra: {extra}\n" in meta
    assert "Requires-Dist: torch<3,>=2.3\n" in meta
    assert "pycocotools" not in meta.split("Provides-Extra")[0]  # detection only, not a core dependency


def test_wheel_in_a_fresh_venv_runs_mmcr_from_outside_the_repository(dists, tmp_path):
    python, site = _fresh_venv(tmp_path)
    _pip_install(python, _wheel(dists[0]), cwd=tmp_path)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = _env() | {"MMCR_CACHE": str(tmp_path / "cache")}
    mmcr = python.parent / "mmcr"
    version = _run([mmcr, "--version"], cwd=work, env=env)  # prints where `import mmcr` found the package
    assert version.stdout == f"{NAME} {_wheel(dists[0]).name.split('-')[1]} ({site / 'mmcr'})\n", version.stdout
    assert "warning" not in version.stderr.lower(), version.stderr  # the wheel's code, and no conflict
    helped = _run([mmcr, "pretrain", "--help"], cwd=work, env=env).stdout
    assert "--set KEY=VALUE" in helped and "mnist5k" in helped
    run = _run([mmcr, "pretrain", "--out", "run", "--no-progress", "--set", "train.max_steps=2",
                "--set", "augment.views=2", "--set", "train.batch_size=8", "--set", "eval.knn_every_epochs=0",
                "--set", "eval.final=false"], cwd=work, env=env)
    assert "2 steps" in run.stdout, run.stdout
    assert (work / "run" / "config.yaml").is_file() and list((work / "run" / "checkpoints").glob("ckpt_*.pt"))


def _foreign_wheel(where: Path) -> Path:
    """A wheel laid out as PyPI's unrelated `mmcr` 0.1.0 is: mmcr/__init__.py, mmcr/mmcr.py and its dist-info."""
    info = "mmcr-0.1.0.dist-info"
    files = {
        "mmcr/__init__.py": "from .mmcr import MMCRLoss\n",
        "mmcr/mmcr.py": "class MMCRLoss:\n    pass\n",
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: mmcr\nVersion: 0.1.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{info}/top_level.txt": "mmcr\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{n},,\n" for n in files) + f"{info}/RECORD,,\n"
    path = where / "mmcr-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return path


def test_the_unrelated_mmcr_package_in_the_same_environment_is_named_in_one_line(dists, tmp_path):
    python, _ = _fresh_venv(tmp_path)
    _pip_install(python, _wheel(dists[0]), cwd=tmp_path)
    foreign = _foreign_wheel(tmp_path)
    _pip_install(python, foreign, cwd=tmp_path)  # installed last: its mmcr/__init__.py replaces ours
    mmcr = python.parent / "mmcr"
    err = _run([mmcr, "--version"], cwd=tmp_path).stderr.strip()
    assert err.count("\n") == 0 and "another distribution named 'mmcr'" in err and "pip uninstall mmcr" in err
    _pip_install(python, "--force-reinstall", "--no-deps", _wheel(dists[0]), cwd=tmp_path)  # ours again on top
    warned = _run([python, "-c", "import mmcr"], cwd=tmp_path).stderr
    assert "PackageConflictWarning" in warned and "another distribution named 'mmcr'" in warned
    _run([sys.executable, "-m", "pip", "--python", python, "uninstall", "-y", "mmcr"], cwd=tmp_path)
    err = _run([mmcr, "--version"], cwd=tmp_path).stderr.strip()  # the uninstall took our __init__.py along
    assert err.count("\n") == 0 and "__init__.py is missing" in err and "--force-reinstall mmcr-toolkit" in err


def test_foreign_mmcr_is_found_by_its_files_not_by_its_name(tmp_path):
    from mmcr.distribution import foreign_mmcr

    info = tmp_path / "mmcr-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mmcr\nVersion: 0.1.0\n")
    (info / "RECORD").write_text("__editable__.mmcr-0.1.0.pth,,\n")  # an old editable install of this project
    assert foreign_mmcr([str(tmp_path)]) is None
    (info / "RECORD").write_text("mmcr/__init__.py,,\nmmcr/mmcr.py,,\n")
    assert "another distribution named 'mmcr' (0.1.0" in foreign_mmcr([str(tmp_path)])


def test_a_feature_whose_extra_is_missing_names_the_extra(monkeypatch):
    from mmcr.evaluate.detection import detection_ap
    from mmcr.models import build_backbone

    monkeypatch.setitem(sys.modules, "timm", None)  # as if not installed: importing it raises ImportError
    with pytest.raises(ValueError, match=r"needs timm: pip install 'mmcr-toolkit\[timm\]'"):
        build_backbone("timm:resnet18")
    monkeypatch.setitem(sys.modules, "pycocotools", None)
    with pytest.raises(ValueError, match=r"pip install 'mmcr-toolkit\[detection\]'"):
        detection_ap([], [])
