#!/usr/bin/env python
"""hfgi vs a faithful per-image loop of the published procedure, whole-process wall time.

    python benchmarks/bench_cpu.py [--checkpoint FILE] [--faces N] [--device cpu|cuda] [--skip-split]

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
Prints images/s and ratios, the split of hfgi's time by stage, and each process's peak memory.
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


def run(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (GiB) of one process, measured by a wrapper so runs don't mix."""
    wrapper = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "r = subprocess.run(sys.argv[1:]); dt = time.perf_counter() - t; "
        "print(dt, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(r.returncode)"
    )
    proc = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    wall, rss_kb = proc.stderr.strip().splitlines()[-1].split()
    return float(wall), int(rss_kb) / 2**20


def stage_split(checkpoint: Path, faces: list[Path], device: str, batch: int) -> None:
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
    engine = clock("load model", lambda: load_model(checkpoint, device=device))
    model = engine.net
    photo = clock("decode photo (astronaut.png)", open_photo, photo_path)
    landmarks = clock("detect faces (astronaut.png)", detect_faces, photo.image)
    aligned, _ = clock("align face at 1024 (astronaut.png)", align_faces, photo.image, landmarks)
    images = [clock("decode", read_image, f) for f in faces]
    outs = []
    for start in range(0, len(images), batch):
        x = torch.stack([image_to_tensor(im) for im in images[start : start + batch]]).to(device)
        with engine.runtime.session():  # as the engine runs the model (fp32 exact, no TF32)
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
    print(f"\nsplit of hfgi's time ({device}, batch {batch}; per face unless the stage names one photo):")
    for name, seconds in timings.items():
        per = seconds if "astronaut" in name or name == "load model" else seconds / n
        if name == "generator pass":
            per /= 2
        print(f"  {name:<38} {per * 1000:9.1f} ms")


def main() -> None:
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # as the `hfgi` program sets it (for the split)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--faces", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=None, help="hfgi's batch (default: its own choice)")
    ap.add_argument("--baseline-optimized", action="store_true")
    ap.add_argument("--skip-split", action="store_true")
    ap.add_argument("--split-only", action="store_true", help="only the in-process split of time by stage")
    args = ap.parse_args()
    faces = sorted((SHARED / "data" / "faces").glob("*.jpg"))[: args.faces]
    directions = SHARED / "data" / "directions"
    attrs3 = ["smile", "age", "pose"]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        checkpoint = args.checkpoint
        if checkpoint is None:
            from hfgi_cli.models.hfgi import ModelConfig, make_random_checkpoint

            checkpoint = tmp / "hfgi_random_full.pt"
            make_random_checkpoint(checkpoint, ModelConfig(), seed=0)
        if args.split_only:
            stage_split(checkpoint, faces, args.device, args.batch_size or (1 if args.device == "cpu" else 8))
            return
        baseline = tmp / "baseline.py"
        source = BASELINE.replace("DEVICE", repr(args.device)).replace("OPTIMIZED", str(args.baseline_optimized))
        baseline.write_text(source)
        (tmp / "b").mkdir()
        env = {"PYTHONPATH": str(REPO)}
        base_env = {**env, "THP_MEM_ALLOC_ENABLE": "1" if args.baseline_optimized else "0"}
        hfgi = [sys.executable, "-m", "hfgi_cli"]
        common = ["--checkpoint", str(checkpoint), "--aligned", "--quiet", "--device", args.device, "--overwrite"]
        if args.batch_size:
            common += ["--batch-size", str(args.batch_size)]
        n = len(faces)
        rows = []
        for label, base_attrs, ours in [
            ("invert", "", [*hfgi, "invert", *map(str, faces), "-o", str(tmp / "inv"), *common]),
            ("edit, 1 attribute", "smile",
             [*hfgi, "edit", *map(str, faces), "-o", str(tmp / "e1"), "--directions", str(directions),
              "-a", "smile", "-s", "1", *common]),
            ("edit, 3 attributes", ",".join(attrs3),
             [*hfgi, "edit", *map(str, faces), "-o", str(tmp / "e3"), "--directions", str(directions),
              *[a for attr in attrs3 for a in ("-a", attr)], "-s", "1", *common]),
        ]:
            outputs = n * max(1, len(base_attrs.split(","))) if base_attrs else n
            t_base, m_base = run([sys.executable, str(baseline), str(checkpoint), str(tmp / "b"), str(directions),
                                  base_attrs, *map(str, faces)], base_env)
            t_ours, m_ours = run(ours, env)
            rows.append((label, outputs, t_base, m_base, t_ours, m_ours))
            print(f"{label:<20} published loop {outputs / t_base:6.3f} img/s ({t_base:6.1f} s, {m_base:4.1f} GiB) | "
                  f"hfgi {outputs / t_ours:6.3f} img/s ({t_ours:6.1f} s, {m_ours:4.1f} GiB) | "
                  f"ratio {t_base / t_ours:4.2f}x", flush=True)
        if not args.skip_split:
            stage_split(checkpoint, faces, args.device, args.batch_size or (1 if args.device == "cpu" else 8))
    print(f"\n{n} faces, device {args.device}, torch threads {os.cpu_count()} cores; "
          f"outputs counted per image and edit; ratio = published wall time / hfgi wall time")


if __name__ == "__main__":
    main()
