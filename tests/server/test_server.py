"""`latentdiff serve` end to end: a real server process on loopback (the `served` fixture), our /v1
JSON API, auth, hostile requests, the queue's limits, cancellation and shutdown."""

import base64
import io
import json
import signal
import time

import numpy as np
import pytest
import requests
from conftest import run_cli
from PIL import Image

SMALL = dict(steps=3, width=32, height=32)


def _png(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def _events(served, job_id):
    """(event, data) pairs of a job's server-sent event stream, until it ends."""
    with served.request("GET", f"/v1/jobs/{job_id}/events", stream=True) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in r.iter_lines(decode_unicode=True):
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                yield event, json.loads(line[6:])


def _long_job(served, **kw):
    """A job that runs long enough to be watched and cancelled (tiny model, many steps)."""
    job = served.submit(prompt="long", steps=500, width=64, height=64, **kw)
    deadline = time.monotonic() + 120
    while served.request("GET", f"/v1/jobs/{job['id']}").json()["step"] < 1:
        assert time.monotonic() < deadline, "the long job never made a step"
        time.sleep(0.05)
    return job


def test_cancel_stops_within_the_running_step(pipe_sd1, tmp_path):
    """A cancel that arrives mid-step stops before the UNet's next block: the rest of the step
    (here made slow by a hook) never runs. Before, the whole step ran first."""
    from latentdiff.errors import Cancelled
    from latentdiff.server.executor import make_runner
    from latentdiff.server.jobs import Job

    unet = pipe_sd1.components.unet
    job = Job(
        params=dict(
            prompt="x",
            negative_prompt="",
            steps=3,
            guidance=3.0,
            width=32,
            height=32,
            seed=0,
            num_images=1,
            scheduler=None,
        )
    )
    ran_after, cancelled_at = [], []

    def interrupt_arrives(module, args, output):
        cancelled_at.append(time.monotonic())
        job.cancel.set()

    def slow_rest_of_step(module, args, output):
        ran_after.append(1)
        time.sleep(2.0)

    hooks = [
        unet.up_blocks[0].register_forward_hook(interrupt_arrives),
        unet.up_blocks[1].register_forward_hook(slow_rest_of_step),
    ]
    pool = type("Pool", (), {"get": staticmethod(lambda name: pipe_sd1)})()
    try:
        with pytest.raises(Cancelled):
            make_runner(pool, tmp_path)(job)
        stopped = time.monotonic() - cancelled_at[0]
    finally:
        for h in hooks:
            h.remove()
    assert ran_after == [] and stopped < 1.0 and job.step == 0 and job.images == []
    assert not any(b._forward_pre_hooks for b in [*unet.down_blocks, unet.mid_block, *unet.up_blocks])


def test_health_models_and_openapi(served):
    health = served.request("GET", "/v1/health", auth=False).json()
    assert health["status"] == "ok" and health["queue"]["size"] == 2
    models = served.request("GET", "/v1/models").json()
    assert models["default"] == "tiny-a"
    assert {m["name"] for m in models["models"]} == {"tiny-a", "tiny-b", "broken"}
    spec = served.request("GET", "/openapi.json", auth=False).json()
    for path in ("/v1/generate", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/events", "/sdapi/v1/txt2img"):
        assert path in spec["paths"]
    fields = spec["components"]["schemas"]["GenerateRequest"]["properties"]
    assert {"seed", "init_image", "mask", "strength", "resize", "inpaint_area"} <= set(fields)
    assert "/sdapi/v1/img2img" in spec["paths"]


def test_generate_matches_the_python_api(served):
    from latentdiff import Pipeline

    job = served.submit(prompt="red apple", seed=5, num_images=2, scheduler="ddim", **SMALL)
    assert job["state"] in ("queued", "running") and job["events"].endswith("/events")
    done = served.wait_job(job["id"])
    assert done["state"] == "done", done["error"]
    assert [i["params"]["seed"] for i in done["images"]] == [5, 6]
    pipe = Pipeline.from_pretrained(served.workdir / "models" / "tiny-a", device="cpu", dtype="fp32")
    pipe.progress = False
    expected = pipe("red apple", seed=5, num_images=2, scheduler="ddim", **SMALL)
    for img, ref in zip(done["images"], expected):
        r = served.request("GET", img["url"])
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        got = _png(r.content)
        assert json.loads(got.text["latentdiff"])["seed"] == img["params"]["seed"]
        assert np.array_equal(np.asarray(got.convert("RGB")), np.asarray(ref))
    recent = served.request("GET", "/v1/images?limit=5").json()["images"]
    assert {i["name"] for i in done["images"]} <= {i["name"] for i in recent}


def test_events_stream_progress_previews_and_images(served):
    # Enough steps that the stream (polling every 0.1 s) sees the job running past its first step,
    # whose preview it then carries: a 6-step job could finish between two polls on an idle machine.
    job = served.submit(prompt="green pear", seed=1, steps=80, width=64, height=64, num_images=2)
    events = list(_events(served, job["id"]))
    kinds = [e for e, _ in events]
    assert kinds[-1] == "done" and kinds.count("image") == 2
    steps = [d["step"] for e, d in events if e == "progress" and d["state"] == "running"]
    assert steps and steps == sorted(steps) and max(steps) <= events[-1][1]["total_steps"]
    previews = [d["preview"] for e, d in events if e == "progress" and d.get("preview")]
    assert previews, "no step preview was sent"
    head, b64 = previews[-1].split(",", 1)
    assert head == "data:image/png;base64" and _png(base64.b64decode(b64)).size[0] >= 8


def test_cancel_stops_the_running_job_at_a_step(served):
    job = _long_job(served)
    r = served.request("DELETE", f"/v1/jobs/{job['id']}")
    assert r.status_code == 200 and r.json()["stops"] == "before the UNet's next block"
    final = served.wait_job(job["id"], timeout=60)
    assert final["state"] == "cancelled" and final["images"] == []
    assert final["step"] < final["total_steps"]


def test_full_queue_answers_429_with_retry_after_and_jobs_stay_fifo(served):
    running = _long_job(served)
    waiting = [served.submit(prompt=f"wait {k}", **SMALL) for k in range(2)]
    assert [served.request("GET", f"/v1/jobs/{j['id']}").json()["position"] for j in waiting] == [1, 2]
    r = served.request("POST", "/v1/generate", json=dict(prompt="one too many", **SMALL))
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1 and "queue is full" in r.json()["error"]
    served.request("DELETE", f"/v1/jobs/{running['id']}")
    finished = [served.wait_job(j["id"]) for j in waiting]
    assert [j["state"] for j in finished] == ["done", "done"]
    assert finished[0]["finished"] <= finished[1]["started"]


def test_a_failing_job_fails_alone(served):
    bad = served.wait_job(served.submit(prompt="x", model="broken", **SMALL)["id"])
    assert bad["state"] == "failed" and "broken" in bad["error"] and "Traceback" not in bad["error"]
    good = served.wait_job(served.submit(prompt="x", **SMALL)["id"])
    assert good["state"] == "done"


def test_other_model_by_name_and_lru_budget(served):
    job = served.wait_job(served.submit(prompt="blue sky", model="tiny-b", **SMALL)["id"])
    assert job["state"] == "done" and job["images"][0]["params"]["model"].endswith("tiny-b")
    # The budget holds one tiny model: loading tiny-b evicted tiny-a.
    assert served.request("GET", "/v1/health").json()["models_loaded"] == ["tiny-b"]
    served.wait_job(served.submit(prompt="back", **SMALL)["id"])
    assert served.request("GET", "/v1/health").json()["models_loaded"] == ["tiny-a"]


def test_auth(served):
    r = served.request("POST", "/v1/generate", auth=False, json={"prompt": "x"})
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer" and "token" in r.json()["error"]
    wrong = served.request("GET", "/v1/models", auth=False, headers={"Authorization": "Bearer nope-nope-nope"})
    assert wrong.status_code == 401
    basic = requests.get(served.url + "/v1/models", auth=("anyone", served.token), timeout=30)
    assert basic.status_code == 200
    assert served.request("GET", "/sdapi/v1/sd-models", auth=False).status_code == 401
    page = served.request("GET", "/", auth=False)
    assert page.status_code == 200 and "<form" in page.text


@pytest.mark.parametrize(
    "path",
    [
        "/v1/images/..%2F..%2Fetc%2Fpasswd",
        "/v1/images/%2e%2e%2fserver.log",
        "/v1/images/..png",
        "/v1/images/.hidden.png",
        "/v1/images/%2Fetc%2Fhostname",
    ],
)
def test_image_names_cannot_leave_the_output_folder(served, path):
    r = served.request("GET", path)
    assert r.status_code == 404 and "error" in r.json()


@pytest.mark.parametrize("model", ["../tiny-b", "/etc", "tiny-a/../tiny-b", ".", "nonexistent"])
def test_model_names_resolve_only_inside_models_dir(served, model):
    r = served.request("POST", "/v1/generate", json=dict(prompt="x", model=model, **SMALL))
    assert r.status_code == 400 and "model" in r.json()["error"]


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"prompt": "x", "steps": 0}, 422, "steps"),
        ({"prompt": "x", "width": 30}, 400, "multiple of"),
        ({"prompt": "x", "scheduler": "warp"}, 400, "unknown scheduler"),
        ({"prompt": "   "}, 422, "prompt"),
        ({"prompt": "x", "surprise": 1}, 422, "surprise"),
        ({"prompt": "x", "init_image": "not base64!"}, 400, "init image is not base64"),
        ({"prompt": "x", "init_image": base64.b64encode(b"plain text").decode()}, 400, "init image is not usable"),
        ({"prompt": "x", "strength": 0.5}, 400, "need an init image"),
        ({"prompt": "x", "strength": 1.5}, 422, "strength"),
    ],
)
def test_bad_requests_get_one_json_line(served, body, status, words):
    r = served.request("POST", "/v1/generate", json=body)
    assert r.status_code == status and words in r.json()["error"] and "\n" not in r.json()["error"]


def test_malformed_and_oversized_bodies(served):
    r = served.request("POST", "/v1/generate", data=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "error" in r.json()
    big = json.dumps({"prompt": "x" * (2 * 1024 * 1024)})
    r = served.request("POST", "/v1/generate", data=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "larger than" in r.json()["error"]


def test_cors_answers_only_the_origin_named_by_the_flag(served, tmp_path):
    from conftest import CORS_ORIGIN
    from fastapi.testclient import TestClient

    from latentdiff.server.app import Server, create_app
    from latentdiff.server.config import ServeConfig

    def preflight(get, origin):
        return get(
            "OPTIONS",
            "/v1/generate",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )

    def served_get(method, path, headers):
        return requests.request(method, served.url + path, headers=headers, timeout=30)

    ok = preflight(served_get, CORS_ORIGIN)  # no token: browsers send preflights without credentials
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == CORS_ORIGIN
    assert {"authorization", "content-type"} <= set(ok.headers["access-control-allow-headers"].lower().split(", "))
    other = preflight(served_get, "http://elsewhere.example")
    assert "access-control-allow-origin" not in other.headers
    r = served.request("GET", "/v1/models", headers={"Origin": CORS_ORIGIN})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == CORS_ORIGIN
    # Without --cors (the default) no origin is allowed: the same app, built in this process.
    server = Server(ServeConfig(out=str(tmp_path / "out")), load=lambda ref: None)
    try:
        client = TestClient(create_app(server))
        plain = preflight(lambda m, p, headers: client.request(m, p, headers=headers), CORS_ORIGIN)
        assert plain.status_code != 200 and "access-control-allow-origin" not in plain.headers
    finally:
        server.queue.stop(timeout=5)


def test_unknown_job(served):
    r = served.request("GET", "/v1/jobs/deadbeef")
    assert r.status_code == 404 and r.json()["error"]
    assert served.request("DELETE", "/v1/jobs/deadbeef").status_code == 404


def test_public_host_needs_a_token():
    r = run_cli("serve", "--host", "0.0.0.0")
    assert r.returncode == 2 and "--token" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_sigterm_cancels_the_running_job_and_keeps_images(tmp_path, tiny_sd1):
    from latentdiff.server.process import ServerProcess

    server = ServerProcess(tmp_path, "--model", tiny_sd1, "--out", tmp_path / "out", "--device", "cpu").wait_ready()
    try:
        first = server.wait_job(server.submit(prompt="kept", **SMALL)["id"])
        long_job = _long_job(server)
        waiting = server.submit(prompt="never started", **SMALL)
    finally:
        code = server.stop(signal.SIGTERM, timeout=60)
    assert code == 0, server.log()
    assert "Traceback" not in server.log() and "image(s) written" in server.log()
    assert [p.name for p in (tmp_path / "out").iterdir()] == [first["images"][0]["name"]]
    assert long_job["id"] and waiting["id"]


def test_compile_runs_once_per_loaded_model_and_stays(tiny_sd1, tmp_path, monkeypatch):
    """serve --compile: each model is compiled when it is loaded, and later requests reuse the compiled
    pipeline (torch.compile itself is replaced by a counter: inductor on this CPU takes minutes)."""
    import time as clock

    from fastapi.testclient import TestClient

    from latentdiff.pipeline import Pipeline
    from latentdiff.server.app import Server, create_app
    from latentdiff.server.config import ServeConfig

    compiled = []

    def fake_compile(self, mode="auto"):
        compiled.append(id(self))
        self.compiled = True
        return self

    monkeypatch.setattr(Pipeline, "compile", fake_compile)
    server = Server(ServeConfig(model=str(tiny_sd1), out=str(tmp_path / "out"), compile=True))
    try:
        client = TestClient(create_app(server))
        for seed in (1, 2):
            job = client.post("/v1/generate", json={"prompt": "a red apple", "steps": 2, "seed": seed}).json()
            deadline = clock.time() + 120
            while (state := client.get(f"/v1/jobs/{job['id']}").json())["state"] in ("queued", "running"):
                assert clock.time() < deadline
                clock.sleep(0.2)
            assert state["state"] == "done", state.get("error")
        assert len(compiled) == 1 and server.pool.peek(server.pool.resolve(None)[0]).compiled
    finally:
        server.queue.stop(timeout=5)


def test_models_dir_links_follow_one_rule_in_listing_and_use(tmp_path, caplog):
    """A link that stays inside --models-dir is listed and usable; one leading out is neither
    (GET /v1/models used to list a linked LoRA folder that requests then refused)."""
    from latentdiff.errors import UsageError
    from latentdiff.server.app import Server
    from latentdiff.server.config import ServeConfig
    from latentdiff.server.models import ModelPool

    models, outside = tmp_path / "models", tmp_path / "elsewhere"
    (models / "runs" / "cat-lora").mkdir(parents=True)
    (models / "runs" / "cat-lora" / "latentdiff.json").write_text('{"lora": "cat.safetensors"}')
    (models / "plain").mkdir()
    (models / "plain" / "model_index.json").write_text("{}")
    outside.mkdir()
    (outside / "model_index.json").write_text("{}")
    (models / "cat").symlink_to(models / "runs" / "cat-lora")
    (models / "far").symlink_to(outside)
    pool = ModelPool(None, str(models), load=lambda ref: None, budget_bytes=1)
    listed = {m["name"]: m["kind"] for m in pool.available() if not m["default"]}
    assert listed == {"cat": "lora", "plain": "model"}
    for name in listed:
        assert pool.resolve(name)[1] == str((models / name).resolve())
    with pytest.raises(UsageError, match="link leading outside --models-dir"):
        pool.resolve("far")
    assert pool.links_outside() == ["far"]
    with caplog.at_level("WARNING", logger="latentdiff.server"):
        server = Server(ServeConfig(out=str(tmp_path / "out"), models_dir=str(models)), load=lambda ref: None)
        server.queue.stop(timeout=5)
    assert "not serving far" in caplog.text
