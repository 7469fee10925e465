"""A1111's UniPC settings on the A1111 API, at the parse level: override_settings, POST /options's stored
settings and the infotext's "UniPC ..." keys (A1111's infotext names) reach the job for A1111's UniPC,
change nothing for its other samplers (as in A1111), ask for A1111's own path, and are refused in one
line at a value A1111 lacks. (That they reach the sampler: tests/sampling/test_a1111_unipc_options.py.)"""

import pytest

pytest.importorskip("fastapi", reason="the server extra (latentdiff[serve]) is not installed")

from latentdiff.errors import UsageError  # noqa: E402
from latentdiff.server.a1111_infotext import with_infotext  # noqa: E402
from latentdiff.server.a1111_params import Txt2ImgRequest, check_settings, job_params  # noqa: E402
from latentdiff.server.a1111_pixels import plan  # noqa: E402

SET = {"uni_pc_variant": "vary_coeff", "uni_pc_skip_type": "logSNR", "uni_pc_order": 2}
SET["uni_pc_lower_order_final"] = False


def test_settings_reach_unipcs_job_only():
    params = job_params(Txt2ImgRequest(sampler_name="UniPC", override_settings=SET))
    assert {k: params[k] for k in SET} == SET
    assert not any(k in job_params(Txt2ImgRequest(sampler_name="Euler a", override_settings=SET)) for k in SET)
    defaults = {"uni_pc_variant": "bh1", "uni_pc_order": 3, "uni_pc_lower_order_final": True}
    assert not any(k in job_params(Txt2ImgRequest(sampler_name="UniPC", override_settings=defaults)) for k in SET)
    stored = job_params(Txt2ImgRequest(sampler_name="UniPC"), stored={"uni_pc_variant": "bh2"})
    assert stored["uni_pc_variant"] == "bh2"


@pytest.mark.parametrize(
    "key,value", [("uni_pc_variant", "bh3"), ("uni_pc_skip_type", 1), ("uni_pc_order", 0), ("uni_pc_order", 2.5)]
)
def test_values_a1111_lacks_are_refused(key, value):
    with pytest.raises(UsageError, match=key):
        check_settings({key: value}, "override_settings")


def test_the_infotext_keys_join_override_settings():
    text = "a fox\nSteps: 4, Sampler: UniPC, UniPC variant: vary_coeff, UniPC skip type: logSNR, UniPC order: 2, "
    body = with_infotext(Txt2ImgRequest(infotext=text + "UniPC lower order final: False"))
    assert {k: body.override_settings[k] for k in SET} == SET
    assert {k: job_params(body)[k] for k in SET} == SET


def test_they_ask_for_a1111s_own_path():
    params = {"scheduler": "unipc", "uni_pc_variant": "bh2"}
    assert plan(params, False, "cpu", None) == (None, None) and params["rng"] == "cpu"
    with pytest.raises(UsageError, match="uni_pc_variant: A1111's UniPC settings run on A1111's own sampling path"):
        plan({"scheduler": "unipc", "uni_pc_variant": "bh2"}, True, "nv", "alwayson_scripts (ControlNet units)")
