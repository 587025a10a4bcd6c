"""What pydantic v2 would cost the command line, against the project's dataclass engine (mmcr.schema).

Measures, in fresh interpreters (median of --repeats): the import of each engine, ``mmcr``'s parser
start-up, building the RunConfig tree as pydantic models (the same fields, ranges as Field constraints;
generated from the dataclass sections so the two hold the same schema) and validating the mnist5k preset.

    PYTHONPATH=src python benchmarks/bench_schema.py [--pydantic-path SITE_PACKAGES] [--repeats 7]

``--pydantic-path`` is appended to sys.path of the pydantic runs only (pydantic is not a dependency).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SNIPPETS = {
    "python (nothing)": "pass",
    "import mmcr.schema": "import mmcr.schema",
    "import mmcr.run.config": "import mmcr.run.config",
    "mmcr parser (build_parser)": "from mmcr.cli import build_parser; build_parser()",
    "import pydantic": "import pydantic; from pydantic import BaseModel, Field, create_model",
}

PYDANTIC_TREE = r"""
import dataclasses, time, typing
t0 = time.perf_counter()
from pydantic import ConfigDict, Field, create_model
from mmcr import schema
from mmcr.run.config import RunConfig, load_config
t1 = time.perf_counter()

def model(cls):
    fields = {}
    for f in dataclasses.fields(cls):
        typ = schema.hints(cls)[f.name]
        if dataclasses.is_dataclass(typ):
            fields[f.name] = (model(typ), Field(default_factory=model(typ)))
            continue
        rng, kw = f.metadata.get("check"), {}
        if rng is not None and typing.get_origin(typ) is not list:
            if rng.lo is not None:
                kw["gt" if rng.lo_open else "ge"] = rng.lo
            if rng.hi is not None:
                kw["lt" if rng.hi_open else "le"] = rng.hi
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        fields[f.name] = (typ, Field(default=default, description=f.metadata.get("doc") or None, **kw))
    return create_model(cls.__name__ + "P", __config__=ConfigDict(extra="forbid", strict=False), **fields)

Run = model(RunConfig)
t2 = time.perf_counter()
data = load_config("mnist5k").to_dict()
for _ in range(200):
    Run.model_validate(data)
t3 = time.perf_counter()
for _ in range(200):
    RunConfig.from_dict(data)
t4 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "build_models": t2 - t1, "pydantic_validate_ms": (t3 - t2) / 200 * 1e3,
                  "schema_validate_ms": (t4 - t3) / 200 * 1e3}))
"""


def _run(code: str, extra_path: str | None) -> tuple[float, float, str]:
    pre = f"import sys; sys.path.append({extra_path!r}); " if extra_path else ""
    before = os.times()
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", pre + code], capture_output=True, text=True, check=True).stdout
    wall = time.perf_counter() - t
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return wall, cpu, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pydantic-path", default=None)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    for name, code in SNIPPETS.items():
        extra = args.pydantic_path if "pydantic" in code else None
        runs = [_run(code, extra) for _ in range(args.repeats)]
        print(f"{name:32s} wall {statistics.median(r[0] for r in runs) * 1e3:7.0f} ms   "
              f"cpu {statistics.median(r[1] for r in runs) * 1e3:7.0f} ms")
    tree = [json.loads(_run("import json\n" + PYDANTIC_TREE, args.pydantic_path)[2]) for _ in range(3)]
    for key in tree[0]:
        value = statistics.median(t[key] for t in tree)
        print(f"RunConfig tree: {key:22s} {value * (1 if key.endswith('_ms') else 1e3):8.2f} ms")


if __name__ == "__main__":
    main()
