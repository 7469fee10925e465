"""A1111's hires_fix_refiner_pass setting on the A1111 API: override_settings, /options and the infotext's
"Hires refiner" reach the job's hires_refiner_pass (tests/sampling/test_a1111_refiner_passes.py runs it)."""

import pytest

pytest.importorskip("fastapi", reason="the server extra (latentdiff[serve]) is not installed")

from latentdiff.errors import UsageError  # noqa: E402
from latentdiff.server.a1111_infotext import with_infotext  # noqa: E402
from latentdiff.server.a1111_params import Txt2ImgRequest, check_settings, job_params  # noqa: E402


def test_the_setting_reaches_the_hires_fix():
    body = Txt2ImgRequest(enable_hr=True, override_settings={"hires_fix_refiner_pass": "both passes"})
    assert job_params(body)["hires_refiner_pass"] == "both"
    assert "hires_refiner_pass" not in job_params(Txt2ImgRequest(enable_hr=True))  # "second pass": ours too
    assert "hires_refiner_pass" not in job_params(
        Txt2ImgRequest(override_settings={"hires_fix_refiner_pass": "first pass"})
    )
    body = with_infotext(
        Txt2ImgRequest(infotext="fox\nSteps: 4, Hires upscale: 2, Denoising strength: 0.5, Hires refiner: first pass")
    )
    assert job_params(body)["hires_refiner_pass"] == "first"
    with pytest.raises(UsageError, match="hires_fix_refiner_pass='third pass'"):
        check_settings({"hires_fix_refiner_pass": "third pass"}, "override_settings")
