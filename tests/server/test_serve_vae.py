"""`serve --vae FILE|DIR`: the default model decodes with the given VAE, as `generate --vae` does (its pixels,
which differ from the model's own VAE's); the other models of --models-dir keep their own. A path that is not there is one line at start."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the server extra (latentdiff[serve]) is not installed")

from latentdiff.server.config import ServeConfig  # noqa: E402

ARGS = dict(prompt="a red apple", steps=2, width=32, height=32, seed=3)


def _served_pixels(client, **body) -> tuple[np.ndarray, dict]:
    r = client.post("/v1/generate", json={**ARGS, **body})
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 120
    while (job := client.get(f"/v1/jobs/{r.json()['id']}").json())["state"] not in ("done", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert job["state"] == "done", job
    image = job["images"][0]
    return np.asarray(Image.open(io.BytesIO(client.get(image["url"]).content)).convert("RGB")), image["params"]


def test_the_default_model_decodes_with_serve_vae(tiny_sd1, tmp_path):
    from fastapi.testclient import TestClient

    from latentdiff import Pipeline
    from latentdiff.models.testing import make_tiny
    from latentdiff.server.app import Server, create_app

    other = make_tiny(tmp_path / "other", "sd1", seed=7)  # its vae/ is the VAE given; a model folder lends it
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "plain").symlink_to(tiny_sd1, target_is_directory=True)
    cfg = ServeConfig(
        out=str(tmp_path / "out"), model=str(tiny_sd1), vae=str(other), models_dir=str(tmp_path / "models")
    )
    cfg.device, cfg.dtype = "cpu", "fp32"
    server = Server(cfg)
    try:
        with TestClient(create_app(server), raise_server_exceptions=False) as client:
            got, params = _served_pixels(client)
    finally:
        server.queue.stop(timeout=5)
    pipe = Pipeline.from_pretrained(tiny_sd1, device="cpu", dtype="fp32", vae=str(other))
    want = np.asarray(pipe(**ARGS)[0])
    assert np.array_equal(got, want) and params["vae"] == str(other)
    assert (
        np.abs(
            np.asarray(pipe.__class__.from_pretrained(tiny_sd1, device="cpu", dtype="fp32")(**ARGS)[0], int) - want
        ).max()
        > 0
    )
    assert cfg.parts(str(other))["vae"] is None  # the models of --models-dir keep their own
