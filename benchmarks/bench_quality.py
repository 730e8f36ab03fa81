#!/usr/bin/env python
"""What per-face quality numbers cost: the measurement against a face's model time, and whole runs
with and without it, in one process on the same model and faces.

    python benchmarks/bench_quality.py [--checkpoint FILE] [--faces N] [--rounds R]

The checkpoint is a seeded random one in the published (full-size) format unless given. Per face:
the model's time for an inversion (``Model.forward``, encoder + decoder) and for an edit with the
extra decode ``--quality`` asks for; ``finish`` with and without ``quality`` (the measurement is the
difference). Whole pipeline runs of ``invert`` (``--no-quality`` vs default) on the aligned faces
and on the example photos (detection, paste-back), and ``edit`` (default vs ``--quality``) alternate
over ``--rounds`` (the best of each is compared) so that a busy machine slows both alike. Prints
ratios; run it on an idle machine and name the CPU beside the figures (it prints ``lscpu``'s).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO))

from benchmarks.machine import cpu_name  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--faces", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    import torch

    from hfgi_cli.edits import EditSpec
    from hfgi_cli.engine import load_model
    from hfgi_cli.inputs import collect_inputs
    from hfgi_cli.pipeline import Pipeline, RunOptions

    torch.set_num_threads(torch.get_num_threads())
    tmp = Path(tempfile.mkdtemp(prefix="bench_quality_"))
    ckpt = args.checkpoint
    if ckpt is None:
        ckpt = tmp / "seed0.pt"
        subprocess.run([sys.executable, str(SHARED / "reference" / "make_checkpoint.py"), str(ckpt), "--seed", "0"],
                       check=True, capture_output=True)
    model = load_model(ckpt, device="cpu", directions=SHARED / "data" / "directions")
    faces = sorted((SHARED / "data" / "faces").glob("*.jpg"))[: args.faces]
    smile = EditSpec("smile", 2.0)
    print(f"CPU: {cpu_name()}; torch threads {torch.get_num_threads()}; {len(faces)} aligned faces, full-size model")

    # ---- stage times per face (after one untimed pass: the first one pays for allocations)
    model.forward(model.prepare(faces[0], aligned=True).faces, [None, smile])
    forward_inv, forward_edit, forward_both, finish_plain, finish_measured = [], [], [], [], []
    for path in faces:
        for slots, times in (([None], forward_inv), ([smile], forward_edit), ([None, smile], forward_both)):
            work = model.prepare(path, aligned=True)
            t = time.perf_counter()
            model.forward(work.faces, slots)
            times.append(time.perf_counter() - t)
        for quality, times in ((False, finish_plain), (True, finish_measured)):
            t = time.perf_counter()
            model.finish(work, [None, smile], quality=quality)
            times.append(time.perf_counter() - t)
    med = statistics.median
    measure = med(finish_measured) - med(finish_plain)
    print(f"model per face: inversion {med(forward_inv):.2f} s, edit {med(forward_edit):.2f} s, "
          f"edit + inversion {med(forward_both):.2f} s")
    print(f"quality measurement per face: {measure:.3f} s = {100 * measure / med(forward_inv):.1f} % of an "
          f"inversion's model time; an edit's extra decode + measurement: "
          f"{100 * (med(forward_both) - med(forward_edit) + measure) / med(forward_edit):.1f} % of its model time")

    # ---- whole runs, alternating: aligned faces, and the example photos (6 faces, with detection)
    crops, _ = collect_inputs([str(p) for p in faces])
    photos, _ = collect_inputs([str(REPO / "examples" / "photos")])
    runs: dict[str, list[float]] = {}
    variants = {
        "crops: invert --no-quality": (crops, RunOptions(tmp / "a", [], aligned=True, overwrite=True, quality=False)),
        "crops: invert": (crops, RunOptions(tmp / "b", [], aligned=True, overwrite=True)),
        "crops: edit": (crops, RunOptions(tmp / "c", [smile], aligned=True, overwrite=True)),
        "crops: edit --quality": (crops, RunOptions(tmp / "d", [smile], aligned=True, overwrite=True, quality=True)),
        "photos: invert --no-quality": (photos, RunOptions(tmp / "e", [], overwrite=True, quality=False)),
        "photos: invert": (photos, RunOptions(tmp / "f", [], overwrite=True)),
    }
    n_faces: dict[str, int] = {}
    for _ in range(args.rounds):
        for name, (items, options) in variants.items():
            t = time.perf_counter()
            summary = Pipeline(model, options).run(items, lambda job: None)
            assert not summary.failed, [j.error for j in summary.failed]
            runs.setdefault(name, []).append(time.perf_counter() - t)
            n_faces[name] = sum(j.n_faces for j in summary.jobs)
    for name, times in runs.items():
        print(f"{name:28s} {min(times):7.2f} s ({min(times) / n_faces[name]:.2f} s a face; runs: "
              f"{', '.join(f'{t:.1f}' for t in times)})")

    def cost(a: str, b: str) -> str:
        return f"{100 * (min(runs[b]) / min(runs[a]) - 1):+.1f} %"

    print(f"quality adds: invert of crops {cost('crops: invert --no-quality', 'crops: invert')}, "
          f"invert of photos {cost('photos: invert --no-quality', 'photos: invert')}, "
          f"edit of crops (--quality) {cost('crops: edit', 'crops: edit --quality')}")


if __name__ == "__main__":
    main()
