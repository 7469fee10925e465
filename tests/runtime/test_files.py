"""Output PNGs are complete or absent: Ctrl-C mid-write, a full disk and concurrent writers
never leave a 0-byte, truncated or overwritten file."""

import errno
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from PIL import Image

from latentdiff.cli.main import main
from latentdiff.errors import LatentDiffError
from latentdiff.images.write import save_png
from latentdiff.runtime.files import write_new


def _image():
    im = Image.new("RGB", (16, 16), "red")
    im.info["latentdiff"] = {
        "prompt": "p",
        "negative_prompt": "",
        "seed": 0,
        "steps": 1,
        "guidance": 1.0,
        "scheduler": None,
        "width": 16,
        "height": 16,
    }
    return im


def _partial_then(exc):
    """An Image.save that writes some bytes, then fails like Ctrl-C or a full disk would."""

    def save(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
        raise exc

    return save


@pytest.mark.parametrize(
    "exc", [KeyboardInterrupt(), OSError(errno.ENOSPC, "No space left on device"), RuntimeError("encoder bug")]
)
def test_a_failed_write_leaves_no_file(tmp_path, monkeypatch, exc):
    monkeypatch.setattr(Image.Image, "save", _partial_then(exc))
    with pytest.raises((type(exc), LatentDiffError)):
        save_png(_image(), tmp_path, "x-s0")
    assert list(tmp_path.iterdir()) == []  # no x-s0-0000.png, no hidden temporary either


def test_a_full_disk_names_the_file(tmp_path, monkeypatch):
    (tmp_path / "x-s0-0000.png").write_bytes(b"an older image")
    monkeypatch.setattr(Image.Image, "save", _partial_then(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(LatentDiffError) as e:
        save_png(_image(), tmp_path, "x-s0")
    assert str(e.value) == (
        f"cannot write {tmp_path / 'x-s0-0001.png'}: No space left on device; no partial file was left"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["x-s0-0000.png"]
    assert (tmp_path / "x-s0-0000.png").read_bytes() == b"an older image"


def test_a_written_png_is_complete_and_readable_by_others(tmp_path):
    path = save_png(_image(), tmp_path, "x-s0")
    assert path.name == "x-s0-0000.png" and [p.name for p in tmp_path.iterdir()] == ["x-s0-0000.png"]
    with Image.open(path) as im:
        im.load()
        assert im.size == (16, 16) and "latentdiff" in im.text
    assert path.stat().st_mode & 0o777 == 0o644


def test_an_unwritable_folder_is_one_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(LatentDiffError, match="cannot write into .*file"):
        save_png(_image(), blocker / "out", "x")


def test_concurrent_writers_never_share_a_name(tmp_path):
    names, errors = [], []

    def worker(k):
        try:
            for _ in range(10):
                names.append(write_new(tmp_path, "x", ".bin", lambda f: f.write(bytes([k]) * 1000)))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(names)) == 60
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"x-{n:04d}.bin" for n in range(60)]
    assert all(len(set(p.read_bytes())) == 1 and p.stat().st_size == 1000 for p in tmp_path.iterdir())


def test_without_hard_links_the_name_is_still_reserved_exclusively(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    (tmp_path / "x-0000.png").write_bytes(b"keep me")
    path = write_new(tmp_path, "x", ".png", lambda f: f.write(b"new"))
    assert path.name == "x-0001.png" and path.read_bytes() == b"new"
    assert (tmp_path / "x-0000.png").read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x-0000.png", "x-0001.png"]


# ---- through the CLI ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc, code, line",
    [
        (KeyboardInterrupt(), 130, "latentdiff: interrupted; files written so far are kept"),
        (OSError(errno.ENOSPC, "No space left on device"), 1, "latentdiff: error: cannot write {out}"),
    ],
)
def test_cli_interrupted_or_disk_full_mid_write(tiny_sd1, tmp_path, monkeypatch, capsys, exc, code, line):
    out = tmp_path / "out"
    monkeypatch.setattr(Image.Image, "save", _partial_then(exc))
    assert (
        main(
            ["generate", "x", "--model", str(tiny_sd1), "--out", str(out), "--steps", "1", "--quiet", "--device", "cpu"]
        )
        == code
    )
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(line.format(out=out / "x-s0-0000.png"))
    assert list(out.iterdir()) == []


def test_cli_interrupt_during_start_up_exits_130(monkeypatch, capsys):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(sys.modules["latentdiff.cli.main"], "build_parser", interrupted)  # cli.main: the function
    assert main(["generate", "x"]) == 130
    assert capsys.readouterr().err == "latentdiff: interrupted; files written so far are kept\n"


def _wait_until_loaded(pid: int, library: str, timeout: float = 60) -> None:
    """Wait until process `pid` has mapped a shared library whose path contains `library`."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with open(f"/proc/{pid}/maps") as f:
            if library in f.read():
                return
        time.sleep(0.002)
    raise AssertionError(f"{library} never loaded")


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux /proc to see the imports")
@pytest.mark.parametrize("library", ["_multiarray_umath", "libtorch_cpu"])
def test_real_ctrl_c_while_importing_exits_130(tmp_path, library):
    """SIGINT while the process imports numpy (which turned it into a "bad install" ImportError)
    or torch: exit 130 and one line, not a traceback or death by signal."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "latentdiff.cli", "generate", "x", "--out", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_until_loaded(proc.pid, library)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err == "latentdiff: interrupted; files written so far are kept\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["afile", "afile/sub"])
def test_cli_out_that_is_a_file_is_refused_before_loading(tmp_path, capsys, monkeypatch, where):
    import latentdiff.pipeline

    (tmp_path / "afile").write_text("mine")
    loaded = []
    monkeypatch.setattr(latentdiff.pipeline.Pipeline, "from_pretrained", lambda *a, **k: loaded.append(1))
    code = main(["generate", "x", "--out", str(tmp_path / where), "--quiet"])
    out, err = capsys.readouterr()
    assert code == 2 and "is a file, not a folder" in err and len(err.strip().splitlines()) == 1 and out == ""
    assert loaded == [] and (tmp_path / "afile").read_text() == "mine"
