"""How well a text-to-emoji model draws what it is asked: nearest-reference accuracy.

Each prompt is generated, downsampled to 16x16 and compared (L2) with every rendered emoji,
train and held-out alike. A prompt scores top-k when fewer than k references are strictly
closer than its own emoji (so byte-identical emoji, e.g. flags of Norway and Svalbard, tie
rather than count as misses).
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from latentdiff.errors import UsageError
from latentdiff.formats.preflight import loading_line
from latentdiff.runtime.memory import check_fits
from latentdiff.runtime.reading import is_special, parse_json, read_text
from latentdiff.training.emoji.dataset import load_emoji_font, render_glyphs
from latentdiff.training.emoji.names import DEFAULT_EMOJI_TEST, parse_emoji_test

SIZE = 16
REFERENCE_PIXELS = 1024 * 1024  # build-emoji makes 16 to 128 px a side; 8x that a side, 3 MiB decoded
MAX_ROWS = 100_000  # Emoji 15.0 has 3,773 fully-qualified emoji; a row is one image kept at 16x16


def _small(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("RGB").resize((SIZE, SIZE), Image.BOX), dtype=np.float32).reshape(-1) / 255.0


def load_rows(dataset: Path) -> list[dict]:
    meta = Path(dataset) / "metadata.jsonl"
    if not os.path.lexists(meta):
        raise UsageError(f"{meta} not found; make the dataset with `latentdiff build-emoji {dataset}`")
    return read_rows(meta)


def read_rows(meta: Path) -> list[dict]:
    """A build-emoji metadata.jsonl, read bounded (size, UTF-8, depth; a FIFO refused at once), each
    row a {"file_name", "text"} object naming a file inside the dataset."""
    rows = []
    for line, text in enumerate(read_text(meta, "emoji metadata").split("\n"), 1):
        if not text.strip():
            continue
        row = parse_json(text, f"{meta} line {line}")
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("file_name", "text")):
            raise UsageError(f'{meta} line {line} must be an object with string "file_name" and "text"')
        if ".." in Path(row["file_name"]).parts or Path(row["file_name"]).is_absolute() or "\0" in row["file_name"]:
            raise UsageError(f"{meta} line {line}: file_name {row['file_name']!r:.200} is outside the dataset")
        if len(rows) == MAX_ROWS:
            raise UsageError(
                f"{meta} has more than {MAX_ROWS:,} rows: an emoji set has one row an emoji (Emoji 15.0 has 3,773)"
            )
        rows.append(row)
    return rows


def load_image_of(path: Path, what: str, max_pixels: int = REFERENCE_PIXELS) -> Image.Image:
    """One of a set's images as 8-bit RGB, read bounded (images/read.load_image: a regular file, opened
    without blocking, at most `max_pixels`, fully decoded); any problem is one line naming it."""
    # Here, not at the top: images/read imports torch, which evaluate.py must not pay for at start-up.
    from latentdiff.images.read import BadImageError, load_image

    try:
        return load_image(path, max_pixels)
    except BadImageError as e:
        raise UsageError(f"{what} {path}: {str(e).splitlines()[0][:300]}") from None


def check_writable(path, flag: str) -> None:
    """Refuse, before hours of evaluation, an output path that cannot be written: a folder, a special
    file, or one whose folder does not exist."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir() or is_special(path):
        raise UsageError(f"{flag} {path} is {'a folder' if path.is_dir() else 'not a regular file'}; give a file name")
    if not path.absolute().parent.is_dir():
        raise UsageError(f"{flag} {path}: the folder {path.absolute().parent} does not exist")


def load_references(dataset: Path) -> tuple[list[dict], np.ndarray]:
    """The rows of `dataset` and each image at 16x16, (N, 768) in [0, 1]."""
    rows = load_rows(dataset)
    check_fits(len(rows) * SIZE * SIZE * 3 * 4 * 2, f"the 16x16 references of {len(rows):,} emoji", "fewer rows")
    refs = np.stack([_small(load_image_of(Path(dataset) / r["file_name"], "emoji image")) for r in rows])
    return rows, refs


def font_references() -> tuple[list[str], np.ndarray]:
    """Every emoji name and its 16x16 reference, rendered in memory from the Noto font as
    build-emoji renders them (the same pixels as a dataset's images, without building one)."""
    glyphs = render_glyphs(parse_emoji_test(DEFAULT_EMOJI_TEST), load_emoji_font(), desc="references")
    kept = [(e.name, _small(im)) for e, im, verdict in glyphs if verdict == "ok"]
    return [name for name, _ in kept], np.stack([ref for _, ref in kept])


def name_ranks(images: list, names: list[str], ref_names: list[str], refs: np.ndarray) -> np.ndarray:
    """Nearest-reference rank (see `ranks`) of images[k], made for names[k]; 0: its own emoji is nearest."""
    where = {name: i for i, name in enumerate(ref_names)}
    return ranks(np.stack([_small(im) for im in images]), [where[n] for n in names], refs)


def pick_prompts(
    rows: list[dict], n_train: int = 300, seed: int = 0, n_heldout: int | None = None
) -> dict[str, list[int]]:
    """Row indices of `n_train` training names drawn with `seed`, and of the held-out names (all, or
    `n_heldout` of them drawn the same way: a quick look rather than the measure)."""
    train = [i for i, r in enumerate(rows) if r.get("split") != "heldout"]
    return {"train": _draw(train, n_train, seed), "heldout": heldout_rows(rows, n_heldout, seed)}


def heldout_rows(rows: list[dict], n: int | None = None, seed: int = 0) -> list[int]:
    heldout = [i for i, r in enumerate(rows) if r.get("split") == "heldout"]
    return heldout if n is None else _draw(heldout, n, seed)


def _draw(indices: list[int], n: int, seed: int) -> list[int]:
    return sorted(random.Random(seed).sample(indices, min(n, len(indices))))


def ranks(generated: np.ndarray, targets: list[int], refs: np.ndarray) -> np.ndarray:
    """For each generated image, how many references are strictly closer than its target (one image at
    a time: (N, 768) at once, not (G, N, 768), 370 MB for a batch of 32 against 3,773 emoji)."""
    d = [((image[None, :] - refs) ** 2).sum(-1) for image in generated]  # (G, N) kept; the (N, 768) one at a time
    return np.array([(di < di[t] - 1e-9).sum() for di, t in zip(d, targets)], dtype=np.int64)


def evaluate(
    pipe,
    dataset: Path,
    guidances: list[float],
    steps: int | None = None,
    n_train: int = 300,
    seeds: tuple[int, ...] = (0, 1, 2, 3),
    batch: int = 32,
    n_heldout: int | None = None,
    references: tuple[list[dict], np.ndarray] | None = None,
) -> dict:
    """Top-1/top-5 of each prompt set at each guidance, per generation seed and averaged over them,
    with the top-1 of each emoji group (the weakest categories show where the model fails). The
    training names are drawn once (seed 0), whatever the generation seeds. `references`: the
    dataset's `load_references`, when read already."""
    rows, refs = references or load_references(dataset)
    sets = pick_prompts(rows, n_train, 0, n_heldout)
    results = {}
    images = len(guidances) * len(seeds) * sum(len(idx) for idx in sets.values())
    with progress_bar(images, "eval-emoji: images") as bar:
        for g in guidances:
            for name, idx in sets.items():
                results[f"{name}@g{g:g}"] = _scores(pipe, rows, refs, idx, steps, g, seeds, batch, bar)
                v = results[f"{name}@g{g:g}"]
                bar.write(
                    f"{name:8s} guidance {g:<4g} top-1 {v['top1']:.3f} top-5 {v['top5']:.3f} (n={len(idx)}, "
                    f"seeds {','.join(map(str, seeds))})",
                    file=sys.stderr,
                )
    return results


def _scores(pipe, rows, refs, idx: list[int], steps, g: float, seeds, batch: int, bar) -> dict:
    """Top-1/top-5 of the prompts `idx` at guidance `g`, per seed and over them, and per group."""
    per_seed = {s: _ranks_at(pipe, rows, refs, idx, steps, g, s, batch, bar) for s in seeds}
    rk = np.stack(list(per_seed.values()))  # (seeds, prompts)
    groups = {}
    for k, j in enumerate(idx):
        groups.setdefault(rows[j].get("group", "?"), []).append((rk[:, k] < 1).mean())
    return {
        "n": len(idx),
        "seeds": list(seeds),
        "top1": float((rk < 1).mean()),
        "top5": float((rk < 5).mean()),
        "per_seed": {
            str(s): {"top1": float((r < 1).mean()), "top5": float((r < 5).mean())} for s, r in per_seed.items()
        },
        "groups": dict(sorted(((k, float(np.mean(v))) for k, v in groups.items()), key=lambda kv: kv[1])),
    }


def progress_bar(total: int, desc: str):
    """A progress bar on stderr for the long evaluations (minutes to hours on a CPU)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, dynamic_ncols=True)


def load_pipeline(model):
    """The model to evaluate, saying what is loaded while it loads."""
    # Here, not at the top: it imports torch, which evaluate.py must not pay for at start-up.
    from latentdiff.pipeline import Pipeline

    print(f"latentdiff: {loading_line(model)}", file=sys.stderr, flush=True)
    pipe = Pipeline.from_pretrained(model)
    pipe.progress = False
    return pipe


def _ranks_at(pipe, rows, refs, idx: list[int], steps, guidance: float, seed: int, batch: int, bar=None) -> np.ndarray:
    """Ranks of the prompts `idx` generated at one seed (prompt k of a call uses seed + k, so each
    prompt's noise depends on its place in the batch: the batches are fixed, and so is the result)."""
    out = []
    for i in range(0, len(idx), batch):
        chunk = idx[i : i + batch]
        images = pipe([rows[j]["text"] for j in chunk], steps=steps, guidance=guidance, seed=seed)
        out.append(ranks(np.stack([_small(im) for im in images]), chunk, refs))
        if bar is not None:
            bar.update(len(chunk))
    return np.concatenate(out)


def table(results: dict) -> str:
    seeds = next(iter(results.values()))["seeds"] if results else []
    head = (
        "| prompts | guidance | n | top-1 | top-5 | "
        + " | ".join(f"top-1 s{s}" for s in seeds)
        + " | weakest groups (top-1) |"
    )
    lines = [head, "|" + "---|" * (6 + len(seeds))]
    for key, v in results.items():
        name, g = key.split("@g")
        per = " | ".join(f"{v['per_seed'][str(s)]['top1']:.3f}" for s in seeds)
        weak = ", ".join(f"{k} {t:.2f}" for k, t in list(v["groups"].items())[:3])
        lines.append(f"| {name} | {g} | {v['n']} | {v['top1']:.3f} | {v['top5']:.3f} | {per} | {weak} |")
    return "\n".join(lines)


# Names the shipped model draws as their own emoji (top-1) at seeds 0, 1 and 2 with its recommended
# settings, picked by that measure from about 150 well-known names (docs/shipped-model.md).
GRID_PROMPTS = [
    "cat face",
    "smiling face with sunglasses",
    "face with tears of joy",
    "red heart",
    "thumbs up: dark skin tone",
    "woman biking: medium skin tone",
    "man technologist: dark skin tone",
    "bear",
    "penguin",
    "sunflower",
    "watermelon",
    "automobile",
    "fire",
    "alarm clock",
    "crown",
    "flag: France",
]


def sample_grid(pipe, path: str, prompts: list[str] = GRID_PROMPTS, cols: int = 8, seed: int = 0) -> Path:
    """The picture in docs/shipped-model.md: each prompt at the same `seed` with the model's recommended settings,
    the image `latentdiff generate PROMPT --seed SEED` makes."""
    # Here, not at the top: it imports torch, which evaluate.py must not pay for at start-up.
    from latentdiff.images.write import grid

    images = [pipe(prompt, seed=seed)[0] for prompt in prompts]
    sheet = grid([im.resize((128, 128), Image.NEAREST) for im in images], cols, labels=prompts)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return Path(path)


def run(
    dataset: str,
    model=None,
    steps=None,
    guidance=None,
    n_train: int = 300,
    out=None,
    grid_path=None,
    seeds: tuple[int, ...] = (0, 1, 2, 3),
    grid_names: list[str] | None = None,
    grid_only: bool = False,
    n_heldout: int | None = None,
) -> dict:
    check_writable(out, "--out")
    check_writable(grid_path, "--grid")
    # The dataset is read, and each of its images checked, before the model loads (minutes).
    references = None if grid_only else load_references(Path(dataset))
    rows = references[0] if references else load_rows(Path(dataset))
    unknown = sorted(set(grid_names or []) - {r["text"] for r in rows})
    if unknown:
        raise UsageError(f"--grid-names: not emoji names of {dataset}: {'; '.join(unknown)}")
    pipe = load_pipeline(model)
    if grid_path:
        print(sample_grid(pipe, grid_path, grid_names or GRID_PROMPTS), file=sys.stderr)
    if grid_only:
        return {}
    g = guidance if guidance is not None else pipe.defaults()["guidance"]
    results = evaluate(pipe, Path(dataset), [1.0, g], steps, n_train, seeds, n_heldout=n_heldout, references=references)
    if out:
        Path(out).write_text(json.dumps(results, indent=2))
    print(table(results))
    return results
