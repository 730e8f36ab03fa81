#!/usr/bin/env python
"""hfgi vs a faithful per-image loop of the published procedure, whole-process wall time, per precision.

    python benchmarks/bench_cpu.py [--checkpoint FILE] [--faces N] [--precisions fp32,auto]
                                   [--device cpu|cuda] [--skip-split]

Both sides run as separate processes on the same full-size checkpoint (a seeded random one in the
published format unless --checkpoint is given) and the same N aligned faces, model loading
included. The baseline is the published inference written on top of our modules, in the published form:
one image at a time, fp32, per-sample grouped convolutions, the published conv -> noise ->
bias+activation sequence of separate ops, rosinality's plain-PyTorch `upfirdn2d_native` for the
blurs (HFGI's own op is CUDA-only), NCHW, `torch.load` + `load_state_dict`, PyTorch's default
allocator (no transparent huge pages), and one whole run per attribute (the published script edits
one attribute per run, re-encoding every image), each image saved as a full-resolution PNG. It runs
under `torch.no_grad()` throughout, which is *faster* than the published loop (that one builds
autograd graphs), so the ratios are conservative. `--baseline-optimized` gives the baseline our
forms of the same maths too (huge pages, fused in-place tail, depthwise upfirdn2d, NHWC),
isolating what the pipeline adds.

Per row (invert, edit with 1 attribute, with 3) the published loop runs once and hfgi once per
precision (`auto` is what `--precision auto` picks here, printed), right after it, so every ratio
compares processes measured minutes apart. For each hfgi process it also gives the start-up: from
the process start (the parent's clock just before it is spawned) to the first face entering the
model (``Model.forward``), read by a wrapper of the benchmark's own. Then `hfgi --help`'s wall
time, the CPU (lscpu's model name and flags) and the split of hfgi's time by stage.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO))

from benchmarks.machine import cpu_description  # noqa: E402

BASELINE = r'''
import sys, time, torch, numpy as np
from pathlib import Path
from PIL import Image
from hfgi_cli.models.hfgi import HFGI, config_from_checkpoint
from hfgi_cli.models.stylegan2 import PUBLISHED_FORM, Form
from hfgi_cli.edits import Editor, EditSpec, ModelShape
ckpt_path, out, directions, attrs, faces = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5:]
device = torch.device(DEVICE)
# OPTIMIZED: our forms of the same maths, as `hfgi` runs them on this device; else the published
# per-sample weights, conv -> noise -> bias+activation each a new tensor, rosinality's upfirdn2d_native
form = Form.for_device(device.type) if OPTIMIZED else PUBLISHED_FORM
for attr in (attrs.split(",") if attrs else ["inversion"]):  # one published run per attribute
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    net = HFGI(config_from_checkpoint(ckpt), form); net.load_published_state(ckpt); net = net.to(device).eval()
    del ckpt
    editor = Editor(directions, ModelShape(net.n_latent))
    with torch.no_grad():
        xs = []
        for f in faces:
            im = Image.open(f).convert("RGB").resize((256, 256), Image.BILINEAR)
            t = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float().div(255)
            xs.append(((t - 0.5) / 0.5).unsqueeze(0).to(device))
        codes = [net.encoder(x) + net.latent_avg for x in xs]  # get_all_latents
        for i, (x, w) in enumerate(zip(xs, codes)):
            imgs = net.synthesize(w)
            res = x - torch.nn.functional.interpolate(imgs.clamp(-1, 1), size=(256, 256), mode="bilinear")
            if attr == "inversion":
                img_edit, w_edit = imgs, w
            else:
                w_edit = editor.apply(w, EditSpec(attr, 1.0)).codes
                img_edit = net.synthesize(w_edit)
            img_edit = torch.nn.functional.interpolate(img_edit.clamp(-1, 1), size=(256, 256), mode="bilinear")
            conditions = net.residue(net.grid_align(torch.cat((res, img_edit), 1)))
            result = net.synthesize(w_edit, conditions)
            arr = ((result[0].clamp(-1, 1) + 1) / 2 * 255).round().byte().permute(1, 2, 0).cpu().numpy()
            Image.fromarray(arr).save(out / f"{attr}_{i:05d}.png")
'''


TIMED_HFGI = r'''
import sys, time
from hfgi_cli import engine
first = []
forward = engine.Model.forward
def timed(self, *args, **kwargs):
    if not first:
        first.append(time.time())
    return forward(self, *args, **kwargs)
engine.Model.forward = timed
from hfgi_cli.cli import main
sys.argv = ["hfgi", *sys.argv[1:]]
try:
    main()
finally:
    print("first-forward", first[0] if first else -1, file=sys.stderr)
'''
"""`hfgi` with a clock on the first ``Model.forward`` (benchmark instrumentation, not the product's)."""


def run_timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """(wall s, start-up s, peak RSS GiB) of one `hfgi` process started through TIMED_HFGI."""
    spawned = time.time()
    wall, rss, stderr = _process([sys.executable, "-c", TIMED_HFGI, *cmd], env)
    first = [line for line in stderr if line.startswith("first-forward ")]
    return wall, (float(first[-1].split()[1]) if first else float("nan")) - spawned, rss


def run(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (GiB) of one process."""
    wall, rss, _ = _process(cmd, env)
    return wall, rss


def _process(cmd: list[str], env: dict[str, str] | None) -> tuple[float, float, list[str]]:
    """Wall seconds, peak RSS (GiB) and stderr's lines of one process, measured by a wrapper so
    runs don't mix."""
    wrapper = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "r = subprocess.run(sys.argv[1:]); dt = time.perf_counter() - t; "
        "print(dt, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(r.returncode)"
    )
    proc = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    lines = proc.stderr.strip().splitlines()
    wall, rss_kb = lines[-1].split()
    return float(wall), int(rss_kb) / 2**20, lines


def stage_split(checkpoint: Path, faces: list[Path], device: str, batch: int, precision: str) -> None:
    """Seconds per face for each stage of hfgi's pipeline, measured in-process on the same inputs,
    with the model loaded as the CLI loads it."""
    import torch

    from hfgi_cli.align import align_faces, paste_back
    from hfgi_cli.detect import detect_faces
    from hfgi_cli.engine import load_model
    from hfgi_cli.images import image_to_tensor, open_photo, read_image, save_image, tensor_to_image

    timings: dict[str, float] = {}

    def clock(name: str, fn, *args):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        value = fn(*args)
        if device == "cuda":
            torch.cuda.synchronize()
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t
        return value

    photo_path = SHARED / "data" / "photos" / "astronaut.png"
    engine = clock("load model", lambda: load_model(checkpoint, device=device, precision=precision))
    model = engine.net
    photo = clock("decode photo (astronaut.png)", open_photo, photo_path)
    landmarks = clock("detect faces (astronaut.png)", detect_faces, photo.image)
    aligned, _ = clock("align face at 1024 (astronaut.png)", align_faces, photo.image, landmarks)
    images = [clock("decode", read_image, f) for f in faces]
    outs = []
    for start in range(0, len(images), batch):
        x = torch.stack([image_to_tensor(im) for im in images[start : start + batch]]).to(device)
        with engine.runtime.session():  # as the engine runs the model (its precision)
            codes = clock("encoder", model.latent_codes, x)
            first = clock("generator pass", model.synthesize, codes)
            low = model.to_low_res(first)
            conditions = clock("ADA + consultation", model.consult, x - low, low)
            outs.append(clock("generator pass", model.synthesize, codes, conditions))
    out = torch.cat(outs)
    crop = tensor_to_image(out[0].cpu())
    clock("paste-back (astronaut.png)", paste_back, photo.image, [(crop, aligned[0])])
    with tempfile.TemporaryDirectory() as tmp:
        for i, t in enumerate(out.cpu()):
            clock("encode + write PNG", save_image, tensor_to_image(t), Path(tmp) / f"{i}.png")
    n = len(faces)
    print(f"\nsplit of hfgi's time ({device}, {engine.runtime.precision}, batch {batch}; per face unless the stage "
          "names one photo):")
    for name, seconds in timings.items():
        per = seconds if "astronaut" in name or name == "load model" else seconds / n
        if name == "generator pass":
            per /= 2
        print(f"  {name:<38} {per * 1000:9.1f} ms")


def main() -> None:
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # as the `hfgi` program sets it (for the split)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--faces", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precisions", default="fp32,auto", help="hfgi's --precision values to measure (comma-separated)")
    ap.add_argument("--batch-size", type=int, default=None, help="hfgi's batch (default: its own choice)")
    ap.add_argument("--baseline-optimized", action="store_true")
    ap.add_argument("--skip-split", action="store_true")
    ap.add_argument("--split-only", action="store_true", help="only the in-process split of time by stage")
    args = ap.parse_args()
    from hfgi_cli.precision import resolve_precision

    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    chosen = {p: resolve_precision(p, "cuda" if args.device.startswith("cuda") else args.device) for p in precisions}
    print(cpu_description())
    print("precisions: " + "; ".join(f"{p} = {c} ({why})" for p, (c, why) in chosen.items()), flush=True)
    faces = sorted((SHARED / "data" / "faces").glob("*.jpg"))[: args.faces]
    directions = SHARED / "data" / "directions"
    attrs3 = ["smile", "age", "pose"]
    batch = args.batch_size or (1 if args.device == "cpu" else 8)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        checkpoint = args.checkpoint
        if checkpoint is None:
            from hfgi_cli.models.hfgi import ModelConfig, make_random_checkpoint

            checkpoint = tmp / "hfgi_random_full.pt"
            make_random_checkpoint(checkpoint, ModelConfig(), seed=0)
        if args.split_only:
            for precision in precisions:
                stage_split(checkpoint, faces, args.device, batch, precision)
            return
        baseline = tmp / "baseline.py"
        source = BASELINE.replace("DEVICE", repr(args.device)).replace("OPTIMIZED", str(args.baseline_optimized))
        baseline.write_text(source)
        (tmp / "b").mkdir()
        env = {"PYTHONPATH": str(REPO)}
        base_env = {**env, "THP_MEM_ALLOC_ENABLE": "1" if args.baseline_optimized else "0"}
        common = ["--checkpoint", str(checkpoint), "--aligned", "--quiet", "--device", args.device, "--overwrite"]
        if args.batch_size:
            common += ["--batch-size", str(args.batch_size)]
        n = len(faces)
        for label, base_attrs, ours in [
            ("invert", "", ["invert", *map(str, faces), "-o", str(tmp / "inv"), *common]),
            ("edit, 1 attribute", "smile",
             ["edit", *map(str, faces), "-o", str(tmp / "e1"), "--directions", str(directions),
              "-a", "smile", "-s", "1", *common]),
            ("edit, 3 attributes", ",".join(attrs3),
             ["edit", *map(str, faces), "-o", str(tmp / "e3"), "--directions", str(directions),
              *[a for attr in attrs3 for a in ("-a", attr)], "-s", "1", *common]),
        ]:
            t_base, m_base = run([sys.executable, str(baseline), str(checkpoint), str(tmp / "b"), str(directions),
                                  base_attrs, *map(str, faces)], base_env)
            print(f"{label:<20} published loop {t_base / n:6.2f} s/face ({t_base:6.1f} s, {m_base:4.1f} GiB)",
                  flush=True)
            for precision in precisions:
                t_ours, start, m_ours = run_timed([*ours, "--precision", precision], env)
                print(f"  hfgi {precision:<5} ({chosen[precision][0]}) {t_ours / n:6.2f} s/face ({t_ours:6.1f} s, "
                      f"{m_ours:4.1f} GiB), start-up {start:5.2f} s, model {(t_ours - start) / n:5.2f} s/face | "
                      f"ratio {t_base / t_ours:4.2f}x", flush=True)
        helps = [run([sys.executable, "-m", "hfgi_cli", "--help"], env)[0] for _ in range(3)]
        print(f"hfgi --help: {min(helps):.2f} s (best of 3)")
        if not args.skip_split:
            for precision in precisions:
                stage_split(checkpoint, faces, args.device, batch, precision)
    print(f"\n{n} faces, device {args.device}, {os.cpu_count()} cores; s/face = whole process / faces (outputs "
          "per input face, each with all its edits); start-up = process start to the first face entering the model; "
          "ratio = published wall time / hfgi wall time")


if __name__ == "__main__":
    main()
