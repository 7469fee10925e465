"""A run's recipe names its local paths absolutely, so --resume and export work from any directory."""

import os

import yaml

from latentdiff.training.config import FinetuneConfig
from latentdiff.training.recipe import RECIPE, check_recipe, recipe_dict, write_recipe


def _config(**kw):
    return FinetuneConfig(**{"dataset": "data", "model": "model", "out": "runs/x", **kw})


def test_local_paths_are_saved_absolute_and_hub_ids_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "model").mkdir()
    saved = recipe_dict(_config())
    assert saved["dataset"] == str(tmp_path / "data")
    assert saved["model"] == str(tmp_path / "model")
    assert saved["out"] == "runs/x"  # not created yet: left as written
    assert recipe_dict(_config(model="org/name"))["model"] == "org/name"


def test_resume_elsewhere_reads_the_same_run_and_an_old_relative_recipe_still_resumes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("data", "model", "runs/x"):
        (tmp_path / name).mkdir(parents=True)
    write_recipe(_config(), tmp_path / "runs/x")
    assert yaml.safe_load((tmp_path / "runs/x" / RECIPE).read_text())["model"] == str(tmp_path / "model")
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    here = _config(dataset=str(tmp_path / "data"), model=str(tmp_path / "model"), out=str(tmp_path / "runs/x"))
    assert check_recipe(here, tmp_path / "runs/x") == []
    # a recipe written before paths were saved absolute, resumed from the folder it ran in
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "runs/x" / RECIPE
    old = yaml.safe_load(recipe.read_text())
    old.update(model="model", dataset="data")
    recipe.write_text(yaml.safe_dump(old))
    assert check_recipe(_config(out=str(tmp_path / "runs/x")), tmp_path / "runs/x") == []
    assert os.path.isabs(recipe_dict(_config())["model"])
