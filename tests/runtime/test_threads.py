"""The per-call thread choice (runtime/threads.py): the rule on given machines, the probe's reading
of /proc/stat and cgroups, and that generate and the server apply it call by call without
changing the pixels."""

import types

import numpy as np
import pytest
import torch

import latentdiff.runtime.threads as threads
from latentdiff.runtime.threads import CpuState, LoadProbe, cgroup_cpus, choose_threads, quota_cpus

SMALL, LARGE = 9_000_000, 860_000_000  # the shipped model's UNet; SD1.5's


@pytest.mark.parametrize(
    "cpus, others, params, expected",
    [
        (2, 0.0, SMALL, 1),  # fork/join costs a small UNet more than a second core saves...
        (2, 1.6, SMALL, 1),  # ...on a busy machine too (measured: 1.8x)
        (16, 0.0, SMALL, 1),
        (2, 0.0, LARGE, 2),
        (2, 0.8, LARGE, 1),  # one CPU busy: a thread sharing it would stall the other at every barrier
        (2, 1.6, LARGE, 1),  # none free: still one
        (2, 6.0, LARGE, 1),
        (16, 4.2, LARGE, 12),
        (16, 3.4, LARGE, 13),
        (64, 0.0, LARGE, 64),
        (1.5, 0.0, LARGE, 1),  # a cgroup quota of 1.5 CPUs: one thread runs unthrottled
        (0.5, 0.0, LARGE, 1),
        (4, 0.3, LARGE, 4),
        (4, 1.5, LARGE, 3),  # half a CPU busy still counts as free (no banker's rounding)
        (4, 2.5, LARGE, 2),
    ],
)
def test_thread_choice_table(cpus, others, params, expected):
    choice = choose_threads(CpuState(cpus, others), params)
    assert choice.threads == expected, choice.why
    assert choice.passive == (expected > 1 or (others >= 0.5 and params == LARGE))


def test_a_small_model_never_waits_for_a_probe():
    def probe():
        raise AssertionError("probed")

    assert choose_threads(probe, SMALL).threads == 1
    assert choose_threads(lambda: CpuState(4, 1.0), LARGE).threads == 3


@pytest.mark.parametrize(
    "kw, cpus",
    [
        (dict(cpu_max="max 100000\n"), None),
        (dict(cpu_max="150000 100000\n"), 1.5),
        (dict(quota_us=-1, period_us=100000), None),
        (dict(quota_us=400000, period_us=100000), 4.0),
    ],
)
def test_quota_reads_cgroup_v2_and_v1(kw, cpus):
    assert quota_cpus(**kw) == cpus


def test_the_tightest_quota_on_the_cgroup_path_holds(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    (tmp_path / "a" / "cpu.max").write_text("200000 100000\n")
    (tmp_path / "a" / "b" / "cpu.max").write_text("300000 100000\n")
    assert cgroup_cpus(tmp_path, "0::/a/b\n") == 2.0
    v1 = tmp_path / "cpu" / "job"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpus(tmp_path, "4:memory:/x\n3:cpu,cpuacct:/job\n") == 0.5
    assert cgroup_cpus(tmp_path / "none", "0::/\n") is None


def test_probe_counts_others_busy_time_less_ours_and_not_niced_work(tmp_path, monkeypatch):
    """Two snapshots 1 s apart: 150 busy ticks (100 a second) of which 40 niced, and 0.5 s of our
    own CPU time: others kept 0.6 CPUs busy (niced work yields to us, so it is not counted)."""
    stat = tmp_path / "stat"
    clock = types.SimpleNamespace(monotonic=lambda: now[0], process_time=lambda: now[1], sleep=lambda s: None)
    monkeypatch.setattr(threads, "time", clock)
    monkeypatch.setattr(threads.os, "sysconf", lambda name: 100)
    probe = LoadProbe(stat)
    probe.count_niced = False
    now = [10.0, 3.0]
    stat.write_text("cpu  1000 500 100 9000 0 0 0 0 0 0\n")
    probe.last = probe._snapshot()
    now = [11.0, 3.5]
    stat.write_text("cpu  1090 540 120 9100 0 0 0 0 0 0\n")
    assert probe.others() == pytest.approx(0.6)
    probe.count_niced = True  # a niced process of ours competes with the other niced work
    probe.last = (10.0, 16.0, 3.0)  # 1600 busy ticks then, niced ones counted
    assert probe.others() == pytest.approx((17.5 - 16.0) - 0.5)


def pinned(monkeypatch, *states):
    """The probe answers `states` in turn (then the last again)."""
    answers = list(states)
    monkeypatch.setattr(threads, "probe", lambda cap: answers.pop(0) if len(answers) > 1 else answers[0])


def threads_in_unet(pipe, run):
    seen = []
    handle = pipe.components.unet.register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))
    try:
        out = run()
    finally:
        handle.remove()
    return seen, out


# Thread counts change how oneDNN and MKL split their sums, so fp32 results may differ in the last
# bits; after the decode, no pixel moves by more than 1/255 (measured: 0 on the tiny model in 2 steps,
# 1 on the shipped model in 12, benchmarks/results/cpu_threads-*).
MAX_PIXEL_DIFF = 1


def test_generate_gives_the_same_pixels_whatever_the_thread_choice(pipe_sd1, monkeypatch):
    assert pipe_sd1.threads == "auto"
    images = {}
    monkeypatch.setattr(pipe_sd1, "unet_params", LARGE)  # the rule of a large UNet: threads follow the load
    for others in (0.0, 1.0):  # both CPUs free: 2 threads; one busy: 1
        pinned(monkeypatch, CpuState(2, others))
        seen, out = threads_in_unet(pipe_sd1, lambda: pipe_sd1("a red apple", steps=2, seed=0)[0])
        images[set(seen).pop()] = np.asarray(out, dtype=np.int16)
    assert sorted(images) == [1, 2]
    assert np.abs(images[1] - images[2]).max() <= MAX_PIXEL_DIFF


def test_a_fixed_setting_or_omp_num_threads_is_kept(pipe_sd1, monkeypatch):
    pinned(monkeypatch, CpuState(2, 2.0))
    monkeypatch.setattr(pipe_sd1, "threads", 1)
    seen, _ = threads_in_unet(pipe_sd1, lambda: pipe_sd1("x", steps=1, seed=0))
    assert set(seen) == {1}
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.auto_threads("cpu") is None and threads.auto_threads("cuda") is None
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert threads.auto_threads("cpu") == "auto"


def test_the_server_chooses_again_for_each_request(pipe_sd1, tmp_path, monkeypatch):
    from latentdiff.server.executor import make_runner
    from latentdiff.server.jobs import Job

    pinned(monkeypatch, CpuState(2, 0.0), CpuState(2, 1.0))  # the machine gets busy between requests
    monkeypatch.setattr(pipe_sd1, "unet_params", LARGE)  # the rule of a large UNet
    pool = types.SimpleNamespace(get=lambda name: pipe_sd1)
    run = make_runner(pool, tmp_path)
    params = dict(prompt="x", negative_prompt="", steps=1, guidance=3.0, width=32, height=32, seed=0, num_images=1)
    first, _ = threads_in_unet(pipe_sd1, lambda: run(Job(params=dict(params))))
    second, _ = threads_in_unet(pipe_sd1, lambda: run(Job(params=dict(params))))
    assert set(first) == {2} and set(second) == {1}
