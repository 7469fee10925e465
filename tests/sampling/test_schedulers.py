"""The scheduler table: a model folder whose scheduler config lacks what a method needs gets the
settings of diffusers' Stable Diffusion configs; a method's minimum steps raise the default; and on
the shipped model every scheduler draws well-drawn names as their own emoji (eval-emoji's measure)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import latentdiff
from latentdiff import Pipeline
from latentdiff.sampling.schedulers import SCHEDULERS, scheduler_settings
from latentdiff.training.emoji.dataset import DEFAULT_FONT
from latentdiff.training.emoji.names import APT_COMMAND, DEFAULT_EMOJI_TEST

# What the tiny model's config states and an older or hand-written config may leave out.
SD_SETTINGS = ("clip_sample", "set_alpha_to_one", "skip_prk_steps")


def _load(path):
    pipe = Pipeline.from_pretrained(path, device="cpu", dtype="fp32")
    pipe.progress = False
    return pipe


@pytest.fixture(scope="module")
def bare_models(tiny_sd1, tmp_path_factory):
    """The tiny SD1 model (config as SD's) and copies whose scheduler config states none of SD_SETTINGS,
    one keeping its PNDM class and one naming DDIM."""
    out = {}
    for cls in ("PNDMScheduler", "DDIMScheduler"):
        bare = tmp_path_factory.mktemp("bare") / cls
        shutil.copytree(tiny_sd1, bare)
        f = bare / "scheduler" / "scheduler_config.json"
        config = json.loads(f.read_text())
        assert all(key in config for key in SD_SETTINGS), "the tiny model must state them, to compare with"
        f.write_text(json.dumps({**{k: v for k, v in config.items() if k not in SD_SETTINGS}, "_class_name": cls}))
        out[cls] = _load(bare)
    return _load(tiny_sd1), out


def pixels(pipe, **kw):
    return np.asarray(pipe("a red apple", steps=4, guidance=5.0, seed=3, **kw)[0], dtype=int)


@pytest.mark.parametrize("name", ["ddim", "ddpm", "pndm"])
def test_a_config_missing_what_a_method_needs_gets_sds_settings(bare_models, name):
    full, bare = bare_models
    for pipe in bare.values():
        assert np.abs(pixels(pipe, scheduler=name) - pixels(full, scheduler=name)).max() <= 1, name


def test_the_models_own_method_gets_them_too_and_what_a_config_states_wins(bare_models):
    full, bare = bare_models
    assert np.abs(pixels(bare["DDIMScheduler"]) - pixels(full, scheduler="ddim")).max() <= 1
    assert np.abs(pixels(bare["PNDMScheduler"]) - pixels(full)).max() <= 1
    stated = {"_class_name": "DDIMScheduler", "clip_sample": True, "clip_sample_range": 1.0}
    assert scheduler_settings(stated)[1]["clip_sample"] is True
    assert scheduler_settings(stated, "ddpm") == ("DDPMScheduler", {**stated, "clip_sample": True})
    assert scheduler_settings(stated, "pndm")[1]["skip_prk_steps"] is True  # what makes PLMS always applies


def test_a_methods_minimum_steps_raise_the_default_only(tiny_sd2):
    pipe = _load(tiny_sd2)  # recommends 3 steps
    slow = [k for k, m in SCHEDULERS.items() if m.min_steps > 3]
    assert slow, "no method has a minimum above 3 steps: nothing to test"
    steps = lambda **kw: pipe("x", **kw)[0].info["latentdiff"]["steps"]  # noqa: E731
    assert steps(scheduler=slow[0]) == SCHEDULERS[slow[0]].min_steps
    assert steps(scheduler=slow[0], steps=2) == 2
    assert steps() == steps(scheduler="euler") == 3


def test_the_web_page_lists_the_tables_names(tmp_path):
    """The page fills its scheduler menu from GET /v1/schedulers, which reads the one table; the page
    keeps no list of its own."""
    from fastapi.testclient import TestClient

    from latentdiff.server.app import Server, create_app
    from latentdiff.server.config import ServeConfig

    js = (Path(latentdiff.__file__).parent / "server" / "static" / "app.js").read_text()
    assert "/v1/schedulers" in js and not any(f'"{name}"' in js for name in SCHEDULERS)
    server = Server(ServeConfig(out=str(tmp_path / "out")), load=lambda ref: None)
    try:
        listed = TestClient(create_app(server)).get("/v1/schedulers").json()["schedulers"]
    finally:
        server.queue.stop(timeout=5)
    assert [s["name"] for s in listed] == list(SCHEDULERS)
    assert [s["a1111"] for s in listed] == [m.a1111 for m in SCHEDULERS.values()]


# --- the shipped model ---------------------------------------------------------------------------------
# Names it draws as their own emoji (top-1) with every scheduler at seeds 0-2 (measured for issue 22).
WELL_DRAWN = ["cat face", "red heart", "thumbs up", "smiling face with sunglasses"]


@pytest.fixture(scope="module")
def references():
    if not (DEFAULT_FONT.is_file() and DEFAULT_EMOJI_TEST.is_file()):
        pytest.skip(f"{DEFAULT_FONT} or {DEFAULT_EMOJI_TEST} missing; install with `{APT_COMMAND}`")
    from latentdiff.training.emoji.evaluate import font_references

    return font_references()


@pytest.mark.slow
def test_every_scheduler_draws_the_shipped_models_good_names_at_its_default_steps(references):
    from latentdiff.training.emoji.evaluate import name_ranks

    pipe = Pipeline.from_pretrained(None, device="cpu")
    pipe.progress = False
    bad = {}
    for name in [k for k in SCHEDULERS if k not in ("lcm", "tcd")]:  # those two need a distilled model
        images = [pipe(prompt, seed=0, scheduler=name)[0] for prompt in WELL_DRAWN]
        r = name_ranks(images, WELL_DRAWN, *references)
        bad.update({f"{name} {p!r}": int(k) for p, k in zip(WELL_DRAWN, r) if k > 0})
    assert not bad, f"not the nearest of {len(references[0])} emoji (rank: closer references): {bad}"


def test_the_docs_table_names_every_sampler_and_schedule_type():
    """docs/generate.md#samplers shows the one table: each row's names and what runs it."""
    from latentdiff.sampling.sampler_table import A1111_PATH, COMFY_OWN
    from latentdiff.sampling.schedulers import SAMPLERS, SCHEDULES

    doc = (Path(__file__).resolve().parents[2] / "docs" / "generate.md").read_text()
    rows = {}  # the first row of each name: the sampler table comes before the schedule table
    for line in doc.splitlines():
        if line.startswith("| `"):
            rows.setdefault(line.split("|")[1].strip(" `"), line)
    for key, m in SAMPLERS.items():
        comfy_only = any(c in COMFY_OWN for c in m.comfy)
        runs = m.cls or ("A1111's own path" if key in A1111_PATH else "ComfyUI's own path" if comfy_only else "not yet")
        assert key in rows and m.a1111 in rows[key] and runs in rows[key], key
        assert all(f"`{c}`" in rows[key] for c in m.comfy), key
        assert rows[key].endswith(" yes |" if key in A1111_PATH else " — |"), key  # A1111's own path
    for key, s in SCHEDULES.items():
        assert s.a1111 in doc and all(f"`{c}`" in doc for c in s.comfy), key
