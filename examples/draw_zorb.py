"""Draw the example fine-tuning dataset examples/zorb/: eight 64x64 pictures of a "zorb", a made-up
thing the shipped emoji model has never seen (a purple hexagon with three yellow dots), each with
its caption in a .txt beside it. The pictures are committed; this script says how they were made.

    python examples/draw_zorb.py [OUT]          # default: examples/zorb
"""

from __future__ import annotations

import math
import random
import sys
from pathlib import Path

from PIL import Image, ImageDraw

SIZE, SCALE = 64, 4  # drawn 4x larger, then downsampled: smooth edges like the rendered emoji
CAPTIONS = ["a zorb", "zorb", "a zorb", "a big zorb", "a zorb", "a small zorb", "a zorb", "zorb"]


def draw(seed: int) -> Image.Image:
    rng = random.Random(seed)
    s = SIZE * SCALE
    im = Image.new("RGB", (s, s), "white")
    d = ImageDraw.Draw(im)
    cx, cy = s / 2 + rng.uniform(-4, 4) * SCALE, s / 2 + rng.uniform(-4, 4) * SCALE
    r = {"a big zorb": 29, "a small zorb": 20}.get(CAPTIONS[seed], rng.uniform(23, 27)) * SCALE
    turn = rng.uniform(0, math.pi / 3)
    hexagon = [(cx + r * math.cos(turn + k * math.pi / 3), cy + r * math.sin(turn + k * math.pi / 3)) for k in range(6)]
    purple = (rng.randint(110, 140), rng.randint(30, 60), rng.randint(170, 200))
    d.polygon(hexagon, fill=purple, outline=(60, 20, 90), width=2 * SCALE)
    for k in range(3):  # three yellow dots on a triangle inside
        a = turn + math.pi / 2 + k * 2 * math.pi / 3
        x, y, dot = cx + 0.45 * r * math.cos(a), cy + 0.45 * r * math.sin(a), 0.16 * r
        d.ellipse((x - dot, y - dot, x + dot, y + dot), fill=(250, 215, 40))
    return im.resize((SIZE, SIZE), Image.LANCZOS)


def main(out: str = "examples/zorb") -> None:
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    for i, caption in enumerate(CAPTIONS):
        draw(i).save(root / f"zorb-{i}.png", optimize=True)
        (root / f"zorb-{i}.txt").write_text(caption + "\n", encoding="utf-8")
    print(root)


if __name__ == "__main__":
    main(*sys.argv[1:])
