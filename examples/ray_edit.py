"""HFGI as one stage of your own Ray Data job: photos in, edited photos and latents out.

    python examples/ray_edit.py PHOTOS_DIR_OR_URI OUT_FOLDER [--checkpoint FILE] [--directions DIR] [--gpus N]

``hfgi_cli.ray.HFGIEdit`` loads the model once per actor; each row it gets (``bytes`` and ``path``,
as ``read_binary_files`` gives them) comes back with ``faces``, ``error``, one PNG per edit
(``image_<label>``) and ``latent`` (the inversion's W+ per face). ``hfgi edit --ray`` does the same
with detection on CPU tasks, the outputs written as the single-machine run writes them, and re-runs
that skip what is done; this is the short form for a pipeline of your own.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import ray
from ray.data import ActorPoolStrategy

from hfgi_cli.ray import HFGIEdit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", help="a folder or a URI pyarrow reads (s3://bucket/photos, gs://...)")
    parser.add_argument("out", type=Path)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--directions", default=None)
    parser.add_argument("--gpus", type=int, default=0, help="model actors, one GPU each (0: one CPU actor)")
    args = parser.parse_args()

    ray.init()  # $RAY_ADDRESS, a `ray start` cluster on this machine, or a local one
    photos = ray.data.read_binary_files(args.photos, include_paths=True)
    edited = photos.map_batches(
        HFGIEdit,
        fn_constructor_kwargs=dict(checkpoint=args.checkpoint, directions=args.directions,
                                   edits={"smile": 2}, device="cuda" if args.gpus else "cpu"),
        compute=ActorPoolStrategy(size=max(1, args.gpus)),
        num_gpus=1 if args.gpus else 0,
        batch_size=8 if args.gpus else 1,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    for row in edited.iter_rows():
        name = Path(row["path"]).stem
        if row["error"]:
            print(f"error: {row['error']}")
            continue
        (args.out / f"{name}_smile+2.png").write_bytes(row["image_smile+2"])
        print(f"{row['path']}: {row['faces']} face(s), W+ {tuple(row['latent'].shape)}")


if __name__ == "__main__":
    main()
