"""The server's app in this process (FastAPI's TestClient), for the bounds tests and the fuzzing: the
session's tiny pipeline is the loaded default model (so every parameter check runs at submit), and
the worker only records the jobs it is given (nothing is generated: what is tested is what reaches
the queue)."""

import pytest


class InProcess:
    def __init__(self, server, client, ran):
        self.server, self.client, self.ran = server, client, ran

    def post(self, path: str, raw: bytes, content_type: str = "application/json"):
        return self.client.post(path, content=raw, headers={"Content-Type": content_type})


def serve_in_process(pipe_sd1, tmp_path_factory):
    """A module's fixture: `in_process = pytest.fixture(scope="module", name="in_process")(serve_in_process)`."""
    pytest.importorskip("fastapi", reason="the server extra (latentdiff[serve]) is not installed")
    from fastapi.testclient import TestClient

    from latentdiff.server.app import Server, create_app
    from latentdiff.server.config import ServeConfig
    from latentdiff.server.jobs import JobQueue

    out = tmp_path_factory.mktemp("in-process")
    control = out / "controlnet" / "cn-fake"  # listed and named as a control model; nothing loads it
    control.mkdir(parents=True)
    (control / "config.json").write_text('{"_class_name": "ControlNetModel"}')
    (control / "diffusion_pytorch_model.safetensors").write_bytes(b"\0" * 64)
    adapters = out / "ipadapter"  # an IP-Adapter file and an image encoder folder, listed and named; nothing loads them
    (adapters / "image_encoder").mkdir(parents=True)
    (adapters / "image_encoder" / "config.json").write_text("{}")
    (adapters / "ip-fake.safetensors").write_bytes(b"\0" * 64)
    (out / "tiny").mkdir()  # the default model's folder (the session's pipeline loads), with A1111's files beside it:
    (out / "styles.csv").write_text(
        'name,prompt,negative_prompt\ncinematic,"film still of {prompt}",blurry\nsharp,sharp,\n'
    )
    (out / "vae").mkdir()  # a VAE listed and named by sd_vae; nothing loads it
    (out / "vae" / "other.safetensors").write_bytes(b"\0" * 64)
    (out / "RealESRGAN").mkdir()  # an upscaler model listed and named by hr_upscaler; nothing loads it
    (out / "RealESRGAN" / "RealESRGAN_x4plus.safetensors").write_bytes(b"\0" * 64)
    cfg = ServeConfig(
        out=str(out / "out"),
        model=str(out / "tiny"),
        queue_size=4,
        controlnet_dir=str(control.parent),
        ip_adapter_dir=str(adapters),
    )
    server = Server(cfg, load=lambda ref: pipe_sd1)
    server.pool.get(None)
    server.queue.stop(timeout=5)
    ran = []
    server.queue = JobQueue(ran.append, size=4, keep=8)
    with TestClient(create_app(server), raise_server_exceptions=False) as client:
        yield InProcess(server, client, ran)
    server.queue.stop(timeout=5)
