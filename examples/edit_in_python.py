"""Use hfgi from Python: load the model once, then edit photos, crops and latent files.

    python examples/edit_in_python.py PHOTO [OUT_FOLDER] [--checkpoint FILE] [--directions DIR]

Everything here is the public API (``hfgi_cli.load_model`` and the ``Model`` it returns); it is
the same engine the ``hfgi`` command runs, so it gives the same pixels.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import hfgi_cli


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photo", type=Path)
    parser.add_argument("out", type=Path, nargs="?", default=Path("out/python"))
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--directions", type=Path, default=None)
    args = parser.parse_args()

    # the published checkpoint and directions from the weights folder unless given
    model = hfgi_cli.load_model(args.checkpoint, directions=args.directions)
    # one encoding per face, three outputs: two single edits and one with both of the others at once
    result = model.edit(args.photo, [
        hfgi_cli.EditSpec("age", 2.5),
        hfgi_cli.EditSpec("smile", 1.5),
        hfgi_cli.Combined((hfgi_cli.EditSpec("gender", -2.0), hfgi_cli.EditSpec("eyeglasses", 1.0))),
    ])
    args.out.mkdir(parents=True, exist_ok=True)
    for label, image in result.images.items():
        image.save(args.out / f"{args.photo.stem}_{label}.png")
    for line in result.notes:
        print("note:", line)
    for face in result.faces:
        corners = ", ".join(f"({x:.0f}, {y:.0f})" for x, y in face.quad)
        print(f"face {face.index}: crop corners {corners}; W+ {tuple(face.latent.shape)}")
        face.crops["age+2.5"].save(args.out / f"{args.photo.stem}_face{face.index}_age+2.5.png")
    print(f"wrote {len(result.images)} photo(s) and {len(result.faces)} face crop(s) to {args.out}")


if __name__ == "__main__":
    main()
