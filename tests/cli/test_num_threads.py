"""`generate --num-threads N` and `serve --num-threads N`: the user's thread count instead of the
per-call choice of runtime/threads.py (which OMP_NUM_THREADS or `pipe.threads` also override)."""

from unittest import mock

import pytest
import torch

from latentdiff import Pipeline
from latentdiff.errors import UsageError
from latentdiff.server.config import ServeConfig


def test_generate_runs_the_unet_on_the_threads_given(tiny_sd1, generate, tmp_path):
    seen, real = [], Pipeline.from_pretrained

    def loaded(*args, **kwargs):
        pipe = real(*args, **kwargs)
        pipe.components.unet.register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))
        return pipe

    before = torch.get_num_threads()
    with mock.patch.object(Pipeline, "from_pretrained", loaded):
        code, out, err = generate(tiny_sd1, tmp_path / "o", "--num-threads", "3", "--steps", "1")
    assert code == 0, err
    assert seen and set(seen) == {3}
    assert torch.get_num_threads() == before  # the process's count is given back after the call


@pytest.mark.parametrize("value", ["0", "-1", "4097", "1.5", "two"])
def test_generate_refuses_a_bad_count_in_one_line(run_main, value):
    code, _, err = run_main(["generate", "x", "--num-threads", value])
    assert code == 2
    assert "--num-threads" in err and "Traceback" not in err


def test_serve_takes_the_flag_and_checks_it(monkeypatch):
    from latentdiff.cli.main import build_parser

    args = build_parser().parse_args(["serve", "--num-threads", "2"])
    assert args.num_threads == 2
    assert ServeConfig(num_threads=2).num_threads == 2
    with pytest.raises(UsageError, match="--num-threads must be between 1 and"):
        ServeConfig(num_threads=0)


def test_the_server_gives_its_models_the_count(tiny_sd1):
    from types import SimpleNamespace

    from latentdiff.server.app import Server

    server = Server.__new__(Server)  # only its loader: no worker thread, no folders
    for count, expected in ((1, 1), (None, "auto")):
        server.cfg = ServeConfig(model=str(tiny_sd1), device="cpu", dtype="fp32", num_threads=count)
        with mock.patch.object(Pipeline, "from_pretrained", lambda *a, **k: SimpleNamespace(threads="auto")):
            assert server._load(str(tiny_sd1)).threads == expected
