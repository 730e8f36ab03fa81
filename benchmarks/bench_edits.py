"""What each kind of edit costs per face, against a W+ edit measured in the same run.

    python benchmarks/bench_edits.py [--checkpoint ckpt.pt] [--faces 3] [--rounds 3]

Full-size model (a seeded checkpoint in the published format is written to a temp folder when none
is given), the official direction files of ../shared/data/directions, fp32 on the CPU. Per face:
the second pass with an InterFaceGAN edit (the baseline), with a GANSpace and a STIT edit, with a
GradCtrl edit (its 9 gradient steps on the classifiers, then the same pass), and with a text edit
(StyleSpace offsets). A text prompt's direction is computed once per run, not per face: its cost
is reported apart, with CLIP ViT-B/32's text tower at its real size (seeded weights: OpenAI's
cannot be downloaded here; the cost does not depend on them) and a seeded fs3.npy of the real shape.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO))

from benchmarks.machine import cpu_name  # noqa: E402
from hfgi_cli.edits import Editor, EditSpec, ModelShape, text_spec  # noqa: E402
from hfgi_cli.engine import FaceWork, load_model  # noqa: E402
from hfgi_cli.images import image_to_tensor, load_crop  # noqa: E402


def best(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--faces", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint
        if ckpt is None:
            from hfgi_cli.models.hfgi import make_random_checkpoint

            ckpt = Path(tmp) / "seed0.pt"
            make_random_checkpoint(ckpt, seed=0)
        directions = SHARED / "data" / "directions"
        model = load_model(ckpt, device="cpu", precision="fp32", directions=directions)
        shape = model.model_shape
        paths = sorted((SHARED / "data" / "faces").glob("*.jpg"))[: args.faces]
        faces = [FaceWork(i, crop=image_to_tensor(load_crop(p, str(p)), 256)) for i, p in enumerate(paths)]
        model.encode_faces(faces)

        # a text edit's resources: the official S_mean_std and templates, fs3 and CLIP stand-ins
        folder = Path(tmp) / "dirs"
        (folder / "styleclip").mkdir(parents=True)
        for name in ("S_mean_std", "templates.txt"):
            (folder / "styleclip" / name).write_bytes((directions / "styleclip" / name).read_bytes())
        fs3 = np.random.default_rng(0).standard_normal((6048, 512)).astype(np.float32)
        np.save(folder / "styleclip" / "fs3.npy", fs3 / np.linalg.norm(fs3, axis=1, keepdims=True))
        import open_clip

        clip = open_clip.create_model("ViT-B-32", pretrained=None)
        clip.visual = torch.nn.Identity()

        class Clip:
            def embed(self, texts: list[str]) -> torch.Tensor:
                with torch.inference_mode():
                    return clip.encode_text(open_clip.tokenize(texts)).float()

        text_editor = Editor(folder, ModelShape(shape.n_latent, shape.style_dim, shape.domain, shape.style_layers),
                             text_encoder=Clip())
        text = text_spec("face with curly hair", 4.0, neutral="face with hair", beta=0.05)
        direction_seconds = best(lambda: text_editor.check(text), 1)  # once: the editor keeps the direction

        specs = {"interfacegan (age)": EditSpec("age", 2.0), "ganspace (bald)": EditSpec("bald", 1.0),
                 "stit (gender)": EditSpec("gender", 2.0), "gradctrl (eyeglasses)": EditSpec("eyeglasses", 1.0)}
        editor = Editor(directions, shape)
        latent = torch.stack([f.latent for f in faces])
        results = {}
        with model.runtime.session():
            for label, spec in specs.items():
                editor.check(spec)
                move = best(lambda spec=spec: editor.apply(latent, spec), args.rounds) / len(faces)

                def second_pass(spec=spec) -> None:
                    for face in faces:
                        model.decode_codes([face], editor.apply(face.latent[None], spec), 1.0)

                results[label] = (move, best(second_pass, args.rounds) / len(faces))
            move = best(lambda: text_editor.apply(latent, text), args.rounds) / len(faces)

            def text_pass() -> None:
                for face in faces:
                    model.decode_codes([face], text_editor.apply(face.latent[None], text), 1.0)

            results["styleclip (text)"] = (move, best(text_pass, args.rounds) / len(faces))
    base = results["interfacegan (age)"][1]
    print(f"CPU: {cpu_name()}, {torch.get_num_threads()} threads; full-size model, fp32, {len(faces)} faces, "
          f"best of {args.rounds}")
    print(f"{'edit':24s} {'move s/face':>12s} {'edit s/face':>12s} {'vs W+ edit':>11s}")
    for label, (move, total) in results.items():
        print(f"{label:24s} {move:12.4f} {total:12.3f} {total / base:10.2f}x")
    print(f"text direction (once per prompt and run: CLIP ViT-B/32 text tower over {2 * 79} prompts, fs3): "
          f"{direction_seconds:.2f} s = {direction_seconds / base:.2f}x one face's W+ edit")


if __name__ == "__main__":
    main()
