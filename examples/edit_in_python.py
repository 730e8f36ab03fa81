"""Use hfgi from Python: load once, then align, edit and paste back photos yourself.

    python examples/edit_in_python.py PHOTO [OUT.jpg] [--checkpoint FILE] [--directions DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from hfgi_cli import EditSpec, load_model
from hfgi_cli.align import align_faces, detect_faces, paste_back
from hfgi_cli.edits import Editor
from hfgi_cli.io import image_to_tensor, tensor_to_image
from hfgi_cli.photo import open_photo, save_photo
from hfgi_cli.weights import resolve_directions_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photo", type=Path)
    parser.add_argument("out", type=Path, nargs="?", default=Path("out/python_edit.jpg"))
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--directions", type=Path, default=None)
    args = parser.parse_args()

    model = load_model(args.checkpoint)  # the published checkpoint from the weights folder by default
    editor = Editor(resolve_directions_dir(args.directions), model.n_latent, model.config.style_dim)
    photo = open_photo(args.photo)
    faces, skipped = align_faces(photo.image, detect_faces(photo.image))
    for s in skipped:
        print("skipped a face:", s.reason)
    if not faces:
        raise SystemExit(f"no face found in {args.photo}")

    with torch.inference_mode():
        x = torch.stack([image_to_tensor(f.image) for f in faces]).to(model.device)
        enc = model.encode(x)  # encoder + first generator pass, once per face
        older = editor.apply(enc["latent"], EditSpec("age", 2.5))
        images = model.decode(older, enc["distortion"]).cpu()

    result = paste_back(photo.image, [(tensor_to_image(img), face) for img, face in zip(images, faces)])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_photo(photo, result, args.out)
    print(f"wrote {args.out} ({len(faces)} face(s) aged)")


if __name__ == "__main__":
    main()
