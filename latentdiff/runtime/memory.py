"""Memory a generation needs, what the machine has, and allocation failures as one error.

The estimate is deliberately low (activations only, a few live tensors per layer), so it refuses
only requests that cannot fit; anything it lets through and that still runs out of memory ends
in `allocation_errors`'s one line rather than a traceback or the kernel's OOM killer.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path

from latentdiff.errors import LatentDiffError, UsageError

LIVE_TENSORS = 3  # a layer's input, output and one temporary (GroupNorm/upsample/conv) coexist
_ALLOC_FAILURE = re.compile(r"can't allocate memory|out of memory|not enough memory|alloc.* failed", re.I)


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def amount(n: float) -> str:
    """Bytes as GiB, or MiB below one GiB (a tiny model's weights are not "0.0 GiB")."""
    return gib(n) if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def generation_bytes(
    unet_config, vae_config, batch: int, width: int, height: int, cfg: bool, unet_bytes: int, vae_bytes: int
) -> int:
    """Peak activation memory of denoising and decoding `batch` images of width x height."""
    factor = 2 ** (len(vae_config.get("block_out_channels") or [128]) - 1)
    unet_ch = list(unet_config.get("block_out_channels") or [320])
    latent_px = (width // factor) * (height // factor)
    denoise = sum(c * latent_px / 4**i for i, c in enumerate(unet_ch)) * (2 if cfg else 1)
    return decode_bytes(vae_config, batch, width, height, vae_bytes) + int(LIVE_TENSORS * batch * denoise * unet_bytes)


def decode_bytes(vae_config, batch: int, width: int, height: int, vae_bytes: int) -> int:
    """Peak activation memory of decoding `batch` images of width x height."""
    vae_ch = list(vae_config.get("block_out_channels") or [128])
    # Decoder level i works at 1/2^i of full resolution and receives its input upsampled from
    # level i + 1, so it holds up to max(c_i, c_(i+1)) channels there.
    decode = max(
        max(vae_ch[i], vae_ch[min(i + 1, len(vae_ch) - 1)]) * width * height / 4**i for i in range(len(vae_ch))
    )
    return int(LIVE_TENSORS * batch * decode * vae_bytes)


def decode_tile(vae_config, batch: int, h: int, w: int, factor: int, vae_bytes: int, free: int | None) -> int | None:
    """VAE tiling when it is needed: the largest latent tile (a multiple of 8, at least 16: 128 px for
    SD's VAE) whose decode of `batch` (h, w) latents fits `free` bytes; None where the whole decode fits
    (or `free` is unknown), as the whole decode is faster and seamless."""
    if free is None or decode_bytes(vae_config, batch, w * factor, h * factor, vae_bytes) <= free:
        return None
    tile = max(h, w)
    while tile > 16 and decode_bytes(vae_config, batch, tile * factor, tile * factor, vae_bytes) > free:
        tile = max(16, (tile // 2) // 8 * 8)
    return tile


def batch_that_fits(need, most: int, device, what: str) -> int:
    """The largest batch (halving from `most`) whose `need(batch)` bytes fit on `device`; refuse
    with the figures when even one image does not."""
    free = available_bytes(device)
    batch = most
    while free is not None and batch > 1 and need(batch) > free:
        batch //= 2
    if free is not None and need(batch) > free:
        raise UsageError(
            f"{what} needs about {gib(need(1))} of memory, but only {gib(free)} is available "
            f"on {device}; choose a smaller size"
        )
    return batch


def check_fits(need: int, what: str, advice: str, device=None) -> None:
    """Refuse, before anything is allocated, a request whose estimated `need` bytes exceed the
    memory `device` (default: the CPU) has free, with both figures and what to change."""
    import torch

    free = available_bytes(device or torch.device("cpu"))
    if free is not None and need > free:
        raise UsageError(f"{what} needs about {gib(need)} of memory, but only {gib(free)} is available; {advice}")


def images_at_once(unet, vae, width: int, height: int, cfg: bool, most: int, device) -> int:
    """How many width x height images the loaded `unet` and `vae` denoise and decode at once: at
    most `most`, fewer where the memory would not hold them (batch_that_fits)."""
    unet_bytes, vae_bytes = unet.dtype.itemsize, vae.dtype.itemsize

    def need(batch: int) -> int:
        return generation_bytes(unet.config, vae.config, batch, width, height, cfg, unet_bytes, vae_bytes)

    return batch_that_fits(need, most, device, f"a {width}x{height} image")


def available_bytes(device) -> int | None:
    """Memory a new allocation can still get on `device`, or None where we cannot tell."""
    if device.type == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        # Blocks torch's caching allocator holds but no tensor uses are free to us, not to the driver.
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type != "cpu":
        return None
    found = [n for n in (_meminfo_available(), _cgroup_headroom()) if n is not None]
    return min(found) if found else None


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_headroom() -> int | None:
    """Limit minus usage of this process's cgroup (v2, else v1), where a limit is set."""
    for limit, usage in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            cap, used = Path(limit).read_text().strip(), int(Path(usage).read_text())
        except (OSError, ValueError):
            continue
        if cap.isdigit() and int(cap) < 2**60:
            return max(0, int(cap) - used)
    return None


def is_allocation_failure(e: BaseException) -> bool:
    if isinstance(e, MemoryError):
        return True
    import torch

    if isinstance(e, getattr(torch, "OutOfMemoryError", ())):
        return True
    return isinstance(e, RuntimeError) and bool(_ALLOC_FAILURE.search(str(e)))


@contextmanager
def allocation_errors(what: str, hint: str):
    """Turn a CPU or CUDA allocation failure inside the block into one LatentDiffError."""
    try:
        yield
    except (MemoryError, RuntimeError) as e:
        if not is_allocation_failure(e):
            raise
        raise LatentDiffError(f"out of memory while {what}; {hint}") from None


def check_weights_fit(what: str, sizes: dict[str, int], device, need: tuple[int, int], options: str) -> None:
    """Refuse, before any weight is read, a model whose weights (`sizes`: bytes per component in the
    compute dtype; `need`: bytes on the compute device and in CPU RAM, runtime.offload.weights_need)
    cannot fit, in one line naming both figures, the largest parts and `options`. Activations come on
    top and are checked per request (images_at_once)."""
    import torch

    parts = ", ".join(f"{name} {amount(n)}" for name, n in sorted(sizes.items(), key=lambda kv: -kv[1])[:3])
    for where, dev, n in (("on " + str(device), device, need[0]), ("in RAM", torch.device("cpu"), need[1])):
        free = available_bytes(dev) if n else None
        if free is not None and n > free:
            raise UsageError(
                f"{what} needs about {amount(n)} {where} for its weights ({parts}), but only {amount(free)} is "
                f"available; {options}"
            )


# ---- weights that stay in memory ------------------------------------------------------------------
# safetensors maps a weight file and hands out tensors that live in that mapping wherever no cast
# copied them (a model loaded in its stored dtype). Those pages are the page cache's: under memory
# pressure the kernel drops them and the next step reads them from disk again (the issue saw 178,000
# major page faults in one loaded run). A server copies them into its own memory once (`--pin-weights`).


def pin_weights(*modules) -> int:
    """Copy every CPU parameter and buffer of `modules` that is not in memory of its own (a file
    mapping, or a view of a larger storage) into a tensor of its own; returns the bytes copied.
    One tensor at a time, so the peak rises by the largest tensor only."""
    import torch

    copied = 0
    with torch.no_grad():
        for module in modules:
            for t in (*module.parameters(), *module.buffers()):
                if t.device.type == "cpu" and _borrowed(t):
                    t.data = t.data.clone(memory_format=torch.preserve_format)
                    copied += t.numel() * t.element_size()
    return copied


def _borrowed(t) -> bool:
    """Whether `t` shares a storage larger than itself (safetensors' one mapping per file) or one it
    does not own (a mapping): cloning such a tensor gives it anonymous memory of its own."""
    storage = t.untyped_storage()
    return storage.nbytes() > t.numel() * t.element_size() or not storage.resizable()


def major_faults() -> int | None:
    """Major page faults of this process so far (pages read from disk; /proc/self/stat field 12)."""
    try:
        stat = Path("/proc/self/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[9])
    except (OSError, ValueError, IndexError):
        return None
