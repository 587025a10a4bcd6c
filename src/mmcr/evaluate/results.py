"""Where evaluation results go: a JSON file per evaluation plus one line in the run's ``report.md``,
so that a run directory keeps describing itself after it is evaluated."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from mmcr.run import layout
from mmcr.run.files import write_text_atomic
from mmcr.run.report import append_eval_line, eval_line


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
    """
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    payload = {"kind": kind, "source": str(source), "time": stamp, **result}
    if out is not None and str(out).endswith(".json"):
        json_path = Path(out)
        report = json_path.parent / layout.REPORT_FILE
    else:
        d = output_dir(source, out)
        name = kind if not tag else f"{kind}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', tag)}"
        json_path = d / layout.EVAL_DIR / f"{name}.json"
        report = d / layout.REPORT_FILE
    write_text_atomic(json_path, json.dumps(payload, indent=2, default=str) + "\n", what="evaluation result")
    metrics = {k: result[k] for k in ("top1", "top5") if k in result}
    details = {k: result[k] for k in details if k in result}
    append_eval_line(report, eval_line(kind, tag, metrics, details, json_path.name))
    return json_path
