"""A run's small files survive a power cut: the checkpoint manifest is fsynced, with its folder, before
the folder is renamed into place (and the rename itself is fsynced); run.json, config.yaml and the
other files a run rewrites go through write_whole (temporary name, fsync, rename, fsync of the folder).
Each test records the fsyncs and renames as they happen (os.fsync and os.replace monkeypatched)."""

import json
import os
from pathlib import Path

import pytest

from latentdiff.training import checkpoint as ckpt
from latentdiff.training.atomic import write_whole


@pytest.fixture
def events(monkeypatch):
    """("fsync", path) and ("replace", src, dst) in the order they happen."""
    seen = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        seen.append(("fsync", Path(os.readlink(f"/proc/self/fd/{fd}"))))
        return real_fsync(fd)

    def replace(src, dst, **kw):
        seen.append(("replace", Path(src), Path(dst)))
        return real_replace(src, dst, **kw)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return seen


def test_the_manifest_and_its_folder_are_on_disk_before_the_rename(tmp_path, events):
    def write(folder):
        (folder / "weights.bin").write_bytes(b"w" * 100)
        (folder / "sub").mkdir()
        (folder / "sub" / "state.bin").write_bytes(b"s")

    final = ckpt.save_checkpoint(tmp_path, 7, write)
    root, tmp = ckpt.checkpoint_dir(tmp_path), ckpt.checkpoint_dir(tmp_path) / ".tmp-step-00000007"
    renamed = events.index(("replace", tmp, final))
    before = {e[1] for e in events[:renamed] if e[0] == "fsync"}
    assert {tmp / "manifest.json", tmp / "weights.bin", tmp / "sub" / "state.bin", tmp / "sub", tmp} <= before
    assert ("fsync", root) in events[renamed:]  # the rename itself
    assert json.loads((final / "manifest.json").read_text())["files"] == {"sub/state.bin": 1, "weights.bin": 100}
    assert ckpt.latest_checkpoint(tmp_path) == final


def test_write_whole_fsyncs_a_temporary_file_then_renames_it_then_fsyncs_the_folder(tmp_path, events):
    target = tmp_path / "run.json"
    target.write_text("old")
    write_whole(target, '{"new": 1}')
    (_, synced), (_, src, dst), (_, folder) = events
    assert synced == src and src.parent == tmp_path and src != target and dst == target and folder == tmp_path
    assert target.read_text() == '{"new": 1}' and sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def test_write_whole_that_fails_leaves_the_old_file_and_no_debris(tmp_path, monkeypatch):
    target = tmp_path / "config.yaml"
    target.write_text("old: 1\n")

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        write_whole(target, "new: 2\n")
    assert target.read_text() == "old: 1\n" and [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


@pytest.mark.parametrize("which", ["run.json", "config.yaml"])
def test_run_files_are_written_whole(tmp_path, events, which):
    from latentdiff.training.config import FinetuneConfig
    from latentdiff.training.recipe import write_recipe
    from latentdiff.training.runfolder import prepare_run_folder

    out = tmp_path / "run"
    if which == "run.json":
        prepare_run_folder(out, "finetune", ("config.yaml", "checkpoints"), "new")
    else:
        out.mkdir()
        write_recipe(FinetuneConfig(dataset="d", model="m", out=str(out)), out)
    assert [e[2] for e in events if e[0] == "replace"] == [out / which]
    assert ("fsync", out) in events


def _umask() -> int:
    old = os.umask(0o022)
    os.umask(old)
    return old
