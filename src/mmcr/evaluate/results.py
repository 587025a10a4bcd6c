"""Where evaluation results go: a JSON file per evaluation plus one line in the run's ``report.md``,
so that a run directory keeps describing itself after it is evaluated."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from mmcr.rundir import layout
from mmcr.rundir.files import RunFileError, check_inside, check_output, open_append, write_text_atomic
from mmcr.rundir.report import eval_line


def run_dir_of(source: str | Path) -> Path | None:
    """The run directory a model source belongs to (a run dir itself, or ``<run>/checkpoints/x.pt``)."""
    p = Path(str(source))
    if p.is_dir():
        return p
    if p.is_file():
        return p.parent.parent if p.parent.name == layout.CHECKPOINT_DIR else p.parent
    return None


def output_dir(source: str | Path, out: str | Path | None) -> Path:
    """``out`` when given; else the run directory of ``source``; else ``mmcr-eval/<source name>``
    (for ``torchvision:``/``timm:``/``random:`` models, which have no run directory)."""
    if out is not None:
        return Path(out)
    run = run_dir_of(source)
    if run is not None:
        return run
    return Path("mmcr-eval") / re.sub(r"[^A-Za-z0-9_.-]+", "_", str(source))


def record_result(
    kind: str,
    result: dict[str, Any],
    source: str | Path,
    out: str | Path | None = None,
    tag: str | None = None,
    details: tuple[str, ...] = (),
) -> Path:
    """Write ``result`` to ``<dir>/eval/<kind>[_<tag>].json`` and append a line to ``<dir>/report.md``.

    ``<dir>`` is :func:`output_dir`; if ``out`` ends in ``.json`` the JSON goes exactly there and the
    report line next to it. ``details`` names result keys to quote in the report line. Returns the
    JSON path.

    Args:
        kind: the evaluation ("knn", "linear", "semi", "transfer", ...), the JSON file's name.
        result: JSON-serialisable values; ``top1``/``top5`` are quoted in the report line.
        source: the model source (a run directory or checkpoint puts the result inside that run).
        out: a folder, or a ``.json`` file path, overriding the default place.
        tag: appended to the file name, e.g. the data set.
        details: keys of ``result`` to quote in the report line.

    Returns:
        The path of the JSON file written (atomically).

    Raises:
        RunFileError: the path would replace a run's checkpoint or record, or leads through a link.

    Examples:
        >>> import json, pathlib, tempfile
        >>> from mmcr.evaluate import record_result
        >>> tmp = tempfile.TemporaryDirectory()
        >>> run = pathlib.Path(tmp.name)  # stands in for a run directory
        >>> path = record_result("knn", {"top1": 91.5, "top5": 99.0}, source=run, tag="cifar10")
        >>> path.relative_to(run).as_posix(), json.loads(path.read_text())["top1"]
        ('eval/knn_cifar10.json', 91.5)
        >>> (run / "report.md").read_text().count("\\n")  # one report line per result
        1
        >>> tmp.cleanup()
    """
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    payload = {"kind": kind, "source": str(source), "time": stamp, **result}
    json_path, report = destination(kind, source, out, tag)
    metrics = {k: result[k] for k in ("top1", "top5") if k in result}
    details = {k: result[k] for k in details if k in result}
    with open_append(report, what="a report line") as f:  # opened first: a refused report.md leaves no JSON
        write_text_atomic(json_path, json.dumps(payload, indent=2, default=str) + "\n", what="evaluation result")
        f.write(eval_line(kind, tag, metrics, details, json_path.name) + "\n")
    return json_path


def destination(kind: str, source: str | Path, out: str | Path | None = None,
                tag: str | None = None) -> tuple[Path, Path]:
    """``(JSON path, report.md)`` of an evaluation's result, refused (:class:`~mmcr.rundir.files.RunFileError`)
    when it would replace a run's checkpoint or record, follow a link out of the run, or append to a
    linked report. Evaluations call it before they start, so a bad ``--out`` costs no computation."""
    if out is not None and str(out).endswith(".json"):
        json_path = check_output(out, source, what="the evaluation result")
        root = json_path.parent
    else:
        root = output_dir(source, out)
        name = kind if not tag else f"{kind}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', tag)}"
        json_path = check_inside(root / layout.EVAL_DIR / f"{name}.json", root, what="evaluation results")
    report = root / layout.REPORT_FILE
    if report.is_symlink():
        raise RunFileError(f"{report} is a symbolic link; mmcr never writes a report line through a link (it "
                           "could point anywhere): remove the link, or pass --out to write elsewhere")
    return json_path, report
