"""Fuzzing the cascade's new inputs (hypothesis, derandomized): a stage as `generate --upscaler` spells
it (DIR[,NAME=VALUE...]), a latentdiff.json "cascade" list, and the noise level of a pixel stage.
Each ends in a Stage with checked settings or in one UsageError line, never another exception."""

from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st
from test_fuzz import FUZZ, json_value, odd_text

from latentdiff.errors import UsageError
from latentdiff.families.pixel import check_noise_level
from latentdiff.workflows.cascade import Stage, parse_stage, stages_of

setting = st.sampled_from(["steps", "guidance", "noise_level", "step", "", "path", "steps=1"])
spec = st.builds(
    lambda path, items: ",".join([path, *items]),
    st.sampled_from(["stage2", "", "a/b", "x" * 300]) | st.text(max_size=10),
    st.lists(st.builds(lambda k, v, eq: f"{k}={v}" if eq else k, setting, odd_text, st.booleans()), max_size=3),
)


def _checked(stage: Stage) -> None:
    assert stage.path
    assert stage.steps is None or (type(stage.steps) is int and 1 <= stage.steps <= 1000)
    assert stage.guidance is None or (type(stage.guidance) is float and stage.guidance >= 0)
    assert stage.noise_level is None or (type(stage.noise_level) is int and stage.noise_level >= 0)


@settings(FUZZ, max_examples=150)
@given(value=spec | json_value | st.dictionaries(setting | st.just("path"), json_value | odd_text, max_size=4))
def test_fuzz_stage_specs(value):
    try:
        stage = parse_stage(value)
    except UsageError as e:
        assert "\n" not in str(e) and str(e)
    else:
        _checked(stage)


@settings(FUZZ, max_examples=60)
@given(cascade=json_value | st.lists(st.dictionaries(setting | st.just("path"), json_value | odd_text), max_size=3))
def test_fuzz_model_cascade_lists(tmp_path_factory, cascade):
    folder = tmp_path_factory.mktemp("m")
    pipe = SimpleNamespace(model_dir=folder, components=SimpleNamespace(defaults={"cascade": cascade}))
    opts = SimpleNamespace(upscaler=None, upscale=True)
    try:
        stages = stages_of(pipe, opts)
    except UsageError as e:
        assert "\n" not in str(e)
    else:
        for stage in stages:
            _checked(stage)


@settings(FUZZ, max_examples=60)
@given(level=json_value | st.integers(-(2**70), 2**70))
def test_fuzz_noise_levels(level):
    try:
        check_noise_level(level, 999)
    except UsageError as e:
        assert "\n" not in str(e)
    else:
        assert 0 <= level <= 999
