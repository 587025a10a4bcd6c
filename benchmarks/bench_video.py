"""Speed of the window reader (mmcr.data.video.WindowReader) against decoding from the start.

The benchmark writes its own mp4 files with PyAV (libx264, 256 x 256, 30 fps, 30 s: a textured
background drifting behind moving discs, so the encoder sees ordinary motion), then reads windows of
k = 8 frames drawn at random inside w = 16 consecutive frames at a random time of a random file,
resized to 64 px, two ways, interleaved in one process on the same windows:

- reader: the index (built once, as training does) + one seek to the keyframe at or before the
  window + decoding forward, converting only the k frames (libswscale resize);
- baseline: open the file and decode from its first frame up to the window's last frame with PyAV,
  converting the same k frames the same way.

Both decode with one thread, so frames per second are per core; CPU seconds are reported beside
wall seconds. Rows are given for the encoder's default keyframe interval and for one keyframe per
second (``--gops``), since seeking gains with shorter groups of pictures.

    PYTHONPATH=src python benchmarks/bench_video.py --quick      # 2 files of 10 s, 40 windows
    flock /tmp/mmcr-bench.lock env PYTHONPATH=src python benchmarks/bench_video.py   # the recorded run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def write_clip(path: Path, seconds: float, fps: int = 30, size: int = 256, gop: int | None = None,
               seed: int = 0) -> Path:
    import av

    rng = np.random.default_rng(seed)
    tex = rng.integers(0, 256, (size * 2, size * 2, 3), dtype=np.uint8)
    tex = (tex.astype(np.float32).reshape(size, 2, size, 2, 3).mean((1, 3))).astype(np.uint8)  # soft texture
    tex = np.tile(tex, (2, 2, 1))
    yy, xx = np.mgrid[:size, :size]
    discs = [(rng.uniform(0, size, 2), rng.uniform(-3, 3, 2), rng.uniform(12, 40), rng.integers(0, 256, 3))
             for _ in range(4)]
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        if gop is not None:
            s.codec_context.gop_size = gop
        for t in range(int(seconds * fps)):
            ox, oy = int(t * 1.5) % size, int(t * 0.7) % size
            img = tex[oy: oy + size, ox: ox + size].copy()
            for p0, v, r, col in discs:
                cx, cy = (p0 + v * t) % size
                img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = col
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def decode_from_start(path: str, frames: list[int], size: int) -> np.ndarray:
    """The baseline: decode from the first frame until the last wanted one, converting the wanted ones."""
    import av

    want, out = set(frames), {}
    with av.open(path) as c:
        stream = c.streams.video[0]
        stream.codec_context.thread_count = 1
        for i, frame in enumerate(c.decode(stream)):
            if i in want:
                out[i] = frame.to_ndarray(width=size, height=size, format="rgb24", interpolation="AREA")
            if i >= max(frames):
                break
    return np.stack([out[f] for f in frames])


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def bench(folder: Path, files: list[Path], windows: int, k: int, w: int, size: int, seed: int) -> dict:
    from mmcr.data.video import WindowReader, index_video

    t0, c0 = time.perf_counter(), _cpu()
    infos = [index_video(str(f)) for f in files]
    index_s, index_cpu = time.perf_counter() - t0, _cpu() - c0
    reader = WindowReader(size)
    rng = np.random.default_rng(seed)
    times = {"reader": [], "baseline": []}
    cpus = {"reader": 0.0, "baseline": 0.0}
    for i in range(windows):
        j = int(rng.integers(len(files)))
        start = int(rng.integers(0, infos[j]["frames"] - w + 1))
        frames = sorted((start + rng.choice(w, k, replace=False)).tolist())
        order = ("reader", "baseline") if i % 2 == 0 else ("baseline", "reader")  # interleaved
        got = {}
        for name in order:
            t, c = time.perf_counter(), _cpu()
            if name == "reader":
                got[name] = reader.read(str(files[j]), infos[j], frames)
            else:
                got[name] = decode_from_start(str(files[j]), frames, size)
            times[name].append(time.perf_counter() - t)
            cpus[name] += _cpu() - c
        assert np.array_equal(got["reader"], got["baseline"]), "the two ways decoded different frames"
    reader.close()
    out = {"files": len(files), "frames_per_file": infos[0]["frames"], "keyframes_per_file": len(infos[0]["keyframes"]),
           "windows": windows, "index_s_per_file": index_s / len(files), "index_cpu_s_per_file": index_cpu / len(files)}
    for name in times:
        total = sum(times[name])
        out[name] = {"frames_per_s": windows * k / total, "frames_per_cpu_s": windows * k / max(cpus[name], 1e-9),
                     "median_ms_per_window": 1000 * statistics.median(times[name])}
    out["speedup"] = out["reader"]["frames_per_s"] / out["baseline"]["frames_per_s"]
    out["speedup_cpu"] = out["reader"]["frames_per_cpu_s"] / out["baseline"]["frames_per_cpu_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 files of 10 s and 40 windows (a check, not a figure)")
    ap.add_argument("--files", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--windows", type=int, default=120)
    ap.add_argument("--gops", default="default,30", help="keyframe intervals to test: 'default' (libx264's) or frames")
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--window", type=int, default=16)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    if args.quick:
        args.files, args.seconds, args.windows = 2, 10.0, 40
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for gop in args.gops.split(","):
            folder = Path(tmp) / f"gop-{gop}"
            folder.mkdir()
            g = None if gop == "default" else int(gop)
            files = [write_clip(folder / f"v{i}.mp4", args.seconds, gop=g, seed=i) for i in range(args.files)]
            res = bench(folder, files, args.windows, args.k, args.window, args.size, seed=0)
            res["gop"] = gop
            rows.append(res)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_average": os.getloadavg(),
            "k": args.k, "window": args.window, "size": args.size, "seconds": args.seconds, "quick": args.quick}
    print("| keyframe interval | keyframes / file | reader frames/s | baseline frames/s | speed-up (wall) | "
          "speed-up (CPU) | reader ms/window | baseline ms/window | index s/file |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['gop']} | {r['keyframes_per_file']} | {r['reader']['frames_per_s']:.0f} | "
              f"{r['baseline']['frames_per_s']:.0f} | {r['speedup']:.1f}x | {r['speedup_cpu']:.1f}x | "
              f"{r['reader']['median_ms_per_window']:.1f} | {r['baseline']['median_ms_per_window']:.1f} | "
              f"{r['index_s_per_file']:.2f} |")
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if args.out:
        Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
