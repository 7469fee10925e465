"""Few-step models' published settings: recorded in latentdiff.json as a preset or spelled out, they are
what a call without sampling arguments runs; arguments given win; a bad preset is one line."""

import json
import shutil

import numpy as np
import pytest

from latentdiff import Pipeline
from latentdiff.errors import UsageError
from latentdiff.sampling.few_step import PRESETS
from latentdiff.sampling.schedulers import check_scheduler_name


def _with_defaults(tiny_sd1, tmp_path, defaults: dict):
    folder = tmp_path / "model"
    shutil.copytree(tiny_sd1, folder)
    (folder / "latentdiff.json").write_text(json.dumps(defaults))
    return folder


def _px(image):
    return np.asarray(image).astype(int)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_names_a_sampler_that_runs(name):
    settings = PRESETS[name][0]
    assert check_scheduler_name(settings["scheduler"]) == settings["scheduler"]
    assert settings["guidance"] == 1.0 and 1 <= settings["steps"] <= 8  # "guidance_scale=0" = no CFG = our 1.0


def test_a_preset_in_latentdiff_json_is_the_call_without_arguments(tiny_sd1, tmp_path):
    pipe = Pipeline.from_pretrained(str(_with_defaults(tiny_sd1, tmp_path, {"preset": "tcd"})))
    image = pipe("a cat", seed=3)[0]
    meta = image.info["latentdiff"]
    assert (meta["scheduler"], meta["steps"], meta["guidance"], meta["eta"]) == ("tcd", 4, 1.0, 0.3)
    plain = Pipeline.from_pretrained(str(tiny_sd1))
    same = plain("a cat", seed=3, scheduler="tcd", steps=4, guidance=1.0, eta=0.3)[0]
    assert np.array_equal(_px(image), _px(same))
    other = plain("a cat", seed=3, scheduler="tcd", steps=4, guidance=1.0, eta=0.9)[0]
    assert not np.array_equal(_px(image), _px(other))  # the recorded eta is what changed the pixels


def test_arguments_win_and_the_presets_options_stay_with_its_sampler(tiny_sd1, tmp_path):
    pipe = Pipeline.from_pretrained(str(_with_defaults(tiny_sd1, tmp_path, {"preset": "tcd", "steps": 2})))
    assert pipe("a cat", seed=1)[0].info["latentdiff"]["steps"] == 2  # a key it states beats the preset's
    meta = pipe("a cat", seed=1, scheduler="euler", steps=3)[0].info["latentdiff"]
    assert meta["scheduler"] == "euler" and meta["steps"] == 3 and "eta" not in meta  # eta is TCD's, not Euler's
    assert pipe("a cat", seed=1, eta=0.7)[0].info["latentdiff"]["eta"] == 0.7


@pytest.mark.parametrize(
    "defaults,match",
    [
        ({"preset": "lcm-xl"}, r"unknown preset 'lcm-xl'; choose one of: lcm, turbo"),
        ({"preset": 3}, r"unknown preset 3"),
        ({"scheduler": "warp"}, r"unknown scheduler 'warp'"),
        ({"scheduler": "tcd", "eta": -1}, r"eta .*>= 0"),
    ],
)
def test_a_bad_recorded_sampler_is_one_line_at_load(tiny_sd1, tmp_path, defaults, match):
    with pytest.raises(UsageError, match=match):
        Pipeline.from_pretrained(str(_with_defaults(tiny_sd1, tmp_path, defaults)))
