"""Compose ``group.jpg``, a public-domain "group photo", from the two portraits beside it.

    python examples/photos/make_group.py

Four faces at different sizes (FFHQ crops of about 150-250 px) and in-plane tilts (one of 22
degrees) on a soft background, so the examples exercise detection of tilted faces and paste-back
of several faces. Deterministic: the same inputs give the same file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

HERE = Path(__file__).resolve().parent
SIZE = (1600, 1000)
# (portrait, mirrored, scale, tilt in degrees (counter-clockwise), centre x, centre y)
PLACEMENTS = [
    ("astronaut.jpg", False, 0.95, 0.0, 290, 470),
    ("grace_hopper.jpg", False, 0.75, 22.0, 780, 480),
    ("astronaut.jpg", True, 0.90, -12.0, 1290, 350),
    ("grace_hopper.jpg", True, 0.55, 6.0, 1330, 815),
]


def background() -> Image.Image:
    y, x = np.mgrid[0 : SIZE[1], 0 : SIZE[0]].astype(np.float32)
    r = 150 + 60 * x / SIZE[0]
    g = 160 + 40 * y / SIZE[1]
    b = 190 - 50 * x / SIZE[0]
    return Image.fromarray(np.stack([r, g, b], -1).clip(0, 255).astype(np.uint8), "RGB")


def soft_mask(size: tuple[int, int]) -> Image.Image:
    """An ellipse filling the portrait, feathered, so no hard rectangle edge shows."""
    mask = Image.new("L", size, 0)
    w, h = size
    ImageDraw.Draw(mask).ellipse((0.06 * w, 0.03 * h, 0.94 * w, 0.99 * h), fill=255)
    return mask.filter(ImageFilter.GaussianBlur(0.04 * min(size)))


def main() -> None:
    group = background()
    for name, mirrored, scale, tilt, cx, cy in PLACEMENTS:
        img = Image.open(HERE / name).convert("RGB")
        if mirrored:
            img = ImageOps.mirror(img)
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)
        mask = soft_mask(img.size)
        img = img.rotate(tilt, Image.Resampling.BICUBIC, expand=True)
        mask = mask.rotate(tilt, Image.Resampling.BICUBIC, expand=True)
        group.paste(img, (cx - img.width // 2, cy - img.height // 2), mask)
    group.save(HERE / "group.jpg", quality=90)
    print(f"wrote {HERE / 'group.jpg'} ({SIZE[0]}x{SIZE[1]}, {len(PLACEMENTS)} faces)")


if __name__ == "__main__":
    main()
