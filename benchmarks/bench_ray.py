#!/usr/bin/env python
"""The Ray run (``hfgi invert --ray``) against the single-machine run, on this machine.

    python benchmarks/bench_ray.py [--full | --checkpoint FILE] [--inputs N] [--gpu-face-ms MS]

Both runs invert the same N photos (the shared 256 px faces, cycled: detection, alignment, model,
paste-back, latent files) with the same loaded model in this process: ``Pipeline.run`` (reader and
writer threads, torch on every core) and ``run_on_ray`` on a local Ray cluster of every core (its
start is timed apart: an existing cluster has paid it). Then each stage alone, one thread, as one
Ray task or CPU actor runs it: prepare per input, model per face, write per input, and the bytes a
job carries between the stages. The closing note turns them into a scaling estimate for N GPUs
(``--gpu-face-ms``: the model's time per face on one GPU; default 6.7 ms, the README's H100 fp16
inversion rate, 149/s at batch 16, not measured here).
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO))

from benchmarks.machine import cpu_name  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="an HFGI checkpoint (default: a seeded random one)")
    parser.add_argument("--full", action="store_true", help="a full-size seeded checkpoint (1.2 GB), not the small one")
    parser.add_argument("--inputs", type=int, default=12, help="photos to invert")
    parser.add_argument("--gpu-face-ms", type=float, default=6.7, help="model ms per face on one GPU, for the estimate")
    args = parser.parse_args()

    import ray
    import torch

    from hfgi_cli.engine import load_model
    from hfgi_cli.inputs import collect_inputs
    from hfgi_cli.models.hfgi import SMALL_CONFIG, ModelConfig, make_random_checkpoint
    from hfgi_cli.pipeline import Job, Pipeline, RunOptions
    from hfgi_cli.ray import run_on_ray

    cores = os.cpu_count() or 1
    print(f"CPU: {cpu_name()}, {cores} cores; torch {torch.__version__}, ray {ray.__version__}")
    with tempfile.TemporaryDirectory(prefix="bench_ray_") as tmp:
        root = Path(tmp)
        ckpt = args.checkpoint
        if ckpt is None:
            ckpt = root / "model.pt"
            make_random_checkpoint(ckpt, ModelConfig() if args.full else SMALL_CONFIG, seed=1)
        faces = sorted((SHARED / "data" / "faces").glob("*.jpg"))
        src = root / "in"
        src.mkdir()
        for i in range(args.inputs):
            shutil.copy(faces[i % len(faces)], src / f"{i:04d}.jpg")
        items, _ = collect_inputs([str(src)])
        model = load_model(ckpt, device="cpu")
        print(f"model: {'given ' + str(ckpt) if args.checkpoint else 'full-size' if args.full else 'small'} "
              f"checkpoint ({ckpt.stat().st_size / 1e6:.0f} MB), {args.inputs} photos of one 256 px face each, "
              f"invert, fp32 CPU")

        done: list[Job] = []
        start = time.perf_counter()
        Pipeline(model, RunOptions(root / "single", [])).run(items, done.append)
        single = time.perf_counter() - start
        assert [j.status for j in done] == ["ok"] * len(items)

        start = time.perf_counter()
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
        cluster = time.perf_counter() - start
        done = []
        start = time.perf_counter()
        run_on_ray(model, RunOptions(root / "ray", []), items, done.append,
                   model_args={"checkpoint": ckpt, "device": "cpu"})
        on_ray = time.perf_counter() - start
        ray.shutdown()
        assert [j.status for j in done] == ["ok"] * len(items)
        names = [sorted(p.name for p in (root / d).iterdir()) for d in ("single", "ray")]
        assert names[0] == names[1], "the two runs wrote different files"

        print(f"single machine (Pipeline.run):       {single:7.2f} s  {len(items) / single:6.2f} inputs/s")
        print(f"Ray run (run_on_ray, cluster up):     {on_ray:7.2f} s  {len(items) / on_ray:6.2f} inputs/s  "
              f"ratio {on_ray / single:.2f}x")
        print(f"local cluster start (ray.init):       {cluster:7.2f} s  "
              f"(with it: ratio {(on_ray + cluster) / single:.2f}x)")

        # ------------------------------------------------------------ each stage alone, one thread
        torch.set_num_threads(1)
        pipeline = Pipeline(model, RunOptions(root / "stages", []))
        prep, fwd, write, n_faces, sizes = 0.0, 0.0, 0.0, 0, {"prepared": 0, "modelled": 0, "done": 0}
        for item in items:
            job = Job(item)
            t = time.perf_counter()
            pipeline.read_job(job)
            prep += time.perf_counter() - t
            assert job.work is not None
            sizes["prepared"] += len(pickle.dumps(job))
            for face in job.work.faces:
                t = time.perf_counter()
                model.forward([face], pipeline.slots)
                fwd += time.perf_counter() - t
                n_faces += 1
            sizes["modelled"] += len(pickle.dumps(job))
            t = time.perf_counter()
            pipeline.write_job(job)
            write += time.perf_counter() - t
            sizes["done"] += len(pickle.dumps(job))
        n = len(items)
        p_in, m_face, w_in = prep / n, fwd / n_faces, write / n
        print(f"per stage, one thread: prepare {p_in * 1e3:.0f} ms/input, model {m_face * 1e3:.0f} ms/face, "
              f"write {w_in * 1e3:.0f} ms/input ({n_faces / n:.1f} faces/input)")
        mb = {k: v / n / 1e6 for k, v in sizes.items()}
        print(f"a job between stages: {mb['prepared']:.2f} MB prepared -> {mb['modelled']:.2f} MB after the model "
              f"-> {mb['done'] * 1e3:.1f} kB to the driver")

        cpu_per_input = p_in + w_in
        gpu_per_input = args.gpu_face_ms / 1e3 * n_faces / n
        per_gpu = 1 / gpu_per_input
        cores_per_gpu = cpu_per_input / gpu_per_input
        traffic = (mb["prepared"] + mb["modelled"]) * per_gpu
        print("\nscaling estimate (these inputs; one GPU at "
              f"{args.gpu_face_ms:g} ms/face = {per_gpu:.0f} inputs/s):")
        print(f"  CPU work per input {cpu_per_input * 1e3:.0f} ms: {cores_per_gpu:.0f} CPU cores keep one GPU busy; "
              f"with C task cores and N GPUs, throughput = min(N x {per_gpu:.0f}, C / {cpu_per_input:.3f}) inputs/s")
        print(f"  object store traffic: {mb['prepared'] + mb['modelled']:.1f} MB per input in and out of the "
              f"actors, {traffic / 1e3:.1f} GB/s per busy GPU")
        bound = max(cpu_per_input, m_face * n_faces / n)
        print(f"  this machine: one model actor (1 core) beside one core of prepare + write tasks does an input every "
              f"{bound:.2f} s at best ({n * bound:.1f} s for {n}; measured {on_ray:.1f} s, the rest is worker start, "
              "imports, the actor's model load and pickling); the single-machine run overlaps its threads on "
              "both cores")


if __name__ == "__main__":
    main()
