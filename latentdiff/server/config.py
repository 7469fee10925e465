"""The server's options, checked before anything heavy is imported (a refused start is instant)."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from latentdiff.config.params import MAX_THREADS
from latentdiff.errors import UsageError
from latentdiff.formats.transformer_tables import SUPPORTED
from latentdiff.runtime.levers import MANY_CALLS, parse_speed
from latentdiff.runtime.offload import MODES as OFFLOAD_MODES

# A body is read into memory whole (and its pictures decoded): 1 GiB is far above any request of
# ours (a 4096 px picture and mask as uncompressed PNG, base64: about 90 MB). A budget of weights
# kept loaded above 1 TB is a typo; so is one above the machine's memory (weights beyond it cannot
# stay loaded). More than 10000 waiting jobs of seconds each keep a client waiting for hours, and
# the waiting jobs' picture files (up to a body each) must fit in half the memory (the other half
# is the models' default budget). All comparisons refuse NaN too.
MAX_BODY_MB, MAX_BUDGET_GB, MAX_QUEUE = 1024, 1024, 10_000


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 7860
    model: str | None = None  # the default model (None: the shipped one)
    models_dir: str | None = None  # other models a request may name, by folder name
    token: str | None = None
    insecure_no_auth: bool = False
    compile: bool | str = False
    queue_size: int = 16  # jobs waiting (the running one not counted)
    out: str = "outputs"
    cors: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    memory_budget_gb: float | None = None  # loaded models' weights; None: half the RAM
    max_body_mb: float = 16.0
    max_jobs_kept: int = 1000  # finished jobs remembered for GET /v1/jobs/{id}
    controlnet_dir: str | None = None  # ControlNet/T2I-Adapter models a request may name (None: control_dir())
    ip_adapter_dir: str | None = None  # IP-Adapter files (and their image encoders) a request may name
    lora_dir: str | None = None  # LoRA files `<lora:NAME:W>` prompt tags name (None: lora_folder())
    embedding_dir: str | None = None  # embeddings a prompt writes by file name, added to each model before a job
    vae_dir: str | None = None  # VAE files or folders the sd_vae setting names
    a1111_pixels: str = "on"  # on: /sdapi/v1 txt2img runs A1111's own path where it can (its pixels)
    components: str | None = None  # a transformer file --model's text encoders, tokenizers and VAE (generate's)
    text_encoders: tuple = ()  # text encoder files put in place of the default model's (generate's --text-encoder)
    offload: str = "none"  # none, model, sequential (generate's --offload), for every model served
    vae: str | None = None  # a VAE file or folder in place of the default model's own (generate's --vae)
    num_threads: int | None = None  # CPU threads of every generation (None: chosen per call, runtime/threads.py)
    speed: str = "off"  # CPU levers (runtime/levers.py) for every model, chosen for a server's many calls
    pin_weights: bool = False  # copy memory-mapped weights into anonymous memory (runtime/memory.pin_weights)

    def __post_init__(self):
        if not 0 <= self.port <= 65535:
            raise UsageError(f"--port must be between 0 and 65535, got {self.port}")
        if not (isinstance(self.max_body_mb, (int, float)) and 0 < self.max_body_mb <= MAX_BODY_MB):
            raise UsageError(f"--max-body-mb must be > 0 and at most {MAX_BODY_MB}, got {self.max_body_mb}")
        self._check_memory_bounds(machine_memory())
        if self.num_threads is not None and not 1 <= self.num_threads <= MAX_THREADS:
            raise UsageError(f"--num-threads must be between 1 and {MAX_THREADS}, got {self.num_threads}")
        if self.max_jobs_kept < 1:
            raise UsageError(f"max_jobs_kept must be >= 1, got {self.max_jobs_kept}")
        if self.token is not None and len(self.token) < 8:
            raise UsageError("--token must be at least 8 characters")
        if not is_loopback(self.host) and not self.token and not self.insecure_no_auth:
            raise UsageError(
                f"--host {self.host} is reachable from other machines: give --token T "
                "(clients send 'Authorization: Bearer T'), or --insecure-no-auth to accept anyone"
            )
        if self.models_dir is not None and not Path(self.models_dir).is_dir():
            raise UsageError(f"--models-dir {self.models_dir} is not a directory")
        for flag in ("controlnet", "ip_adapter", "lora", "embedding", "vae"):
            given = getattr(self, f"{flag}_dir")
            if given is not None and not Path(given).is_dir():
                raise UsageError(f"--{flag.replace('_', '-')}-dir {given} is not a directory")
        self.speed = parse_speed(self.speed).text
        if self.a1111_pixels not in ("on", "off"):
            raise UsageError(f"--a1111-pixels must be on or off, got {self.a1111_pixels!r}")
        self._check_parts()

    def _check_parts(self) -> None:
        """--components, --text-encoder and --vae complete the default model (a transformer file), as generate's do."""
        if self.offload not in OFFLOAD_MODES:
            raise UsageError(f"--offload must be one of {', '.join(OFFLOAD_MODES)}, got {self.offload!r}")
        if self.components is not None:
            if self.model is None or not Path(self.model).expanduser().is_file():
                raise UsageError(
                    f"--components is for a transformer file as --model ({SUPPORTED}); {self.model} is none"
                )
            if not Path(self.components).expanduser().is_dir():
                raise UsageError(f"--components {self.components}: no such folder")
        for f in self.text_encoders:
            if not Path(f).expanduser().is_file():
                raise UsageError(f"--text-encoder {f}: no such file")
        if self.vae is not None and not Path(self.vae).expanduser().exists():
            raise UsageError(f"--vae {self.vae}: no such file or folder")

    def parts(self, ref) -> dict:
        """What Pipeline.from_pretrained takes beside the reference: the parts of the default model, the offload."""
        own = ref == self.model
        return dict(
            components=self.components if own else None,
            text_encoders=list(self.text_encoders) if own else [],
            vae=self.vae if own else None,
            offload=self.offload,
            speed=self.speed,
            calls=MANY_CALLS,
        )

    def control_dir(self) -> Path | None:
        """The folder of control models requests may name: --controlnet-dir, else a `controlnet/`
        folder beside the models (in --models-dir, or beside a --model folder or file), else none."""
        return self._folder(self.controlnet_dir, "controlnet")

    def adapter_dir(self) -> Path | None:
        """The folder of IP-Adapter files requests may name: --ip-adapter-dir, else an `ipadapter/`
        folder beside the models (as control_dir), else none."""
        return self._folder(self.ip_adapter_dir, "ipadapter")

    def lora_folder(self) -> Path | None:
        """The folder `<lora:NAME:W>` tags take NAME from: --lora-dir, else a `lora/` (A1111's
        `Lora/`) folder beside the models (as control_dir), else none (tags are refused)."""
        return self._folder(self.lora_dir, "lora", "Lora")

    def embedding_folder(self) -> Path | None:
        """The embeddings added to each model: --embedding-dir, else an `embeddings/` folder."""
        return self._folder(self.embedding_dir, "embeddings")

    def vae_folder(self) -> Path | None:
        """The VAEs the sd_vae setting names: --vae-dir, else a `vae/` (A1111's `VAE/`) folder."""
        return self._folder(self.vae_dir, "vae", "VAE")

    def models_subfolder(self, name: str) -> Path | None:
        """A folder `name` in --models-dir (or beside --model), if there is one (upscaler_models.py)."""
        return self._folder(None, name)

    def styles_file(self) -> Path | None:
        """A1111's prompt styles: a styles.csv in --models-dir (or beside --model), if there is one."""
        return self._folder(None, "styles.csv", is_dir=False)

    def _folder(self, given: str | None, *names: str, is_dir: bool = True) -> Path | None:
        if given is not None:
            return Path(given).resolve()
        beside_model = Path(self.model).parent if self.model and Path(self.model).exists() else None
        for base in (self.models_dir, beside_model):
            for name in names:
                found = Path(base) / name if base is not None else None
                if found is not None and (found.is_dir() if is_dir else found.is_file()):
                    return found.resolve()
        return None

    def _check_memory_bounds(self, ram: int | None) -> None:
        """--memory-budget and --queue-size within their ceilings and the machine's memory `ram`
        (None: unknown, the ceilings alone)."""
        if self.queue_size < 1:
            raise UsageError(f"--queue-size must be >= 1, got {self.queue_size}")
        if self.queue_size > MAX_QUEUE:
            raise UsageError(
                f"--queue-size must be at most {MAX_QUEUE} (a client at the back would wait hours), "
                f"got {self.queue_size}"
            )
        waiting = self.queue_size * self.max_body_bytes
        if ram is not None and waiting > ram // 2:
            raise UsageError(
                f"--queue-size {self.queue_size} with --max-body-mb {self.max_body_mb:g}: the waiting "
                f"requests could hold {waiting / 2**30:.1f} GiB of pictures, more than half this "
                f"machine's {ram / 2**30:.1f} GiB of memory; lower --queue-size or --max-body-mb"
            )
        budget, most = self.memory_budget_gb, MAX_BUDGET_GB
        why = f"{MAX_BUDGET_GB} GB"
        if ram is not None and ram / 2**30 < most:
            most, why = (
                ram / 2**30,
                f"{ram / 2**30:.1f} GB (this machine's memory; weights beyond it cannot stay loaded)",
            )
        if budget is not None and not (isinstance(budget, (int, float)) and 0 < budget <= most):
            raise UsageError(f"--memory-budget must be > 0 GB and at most {why}, got {budget}")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def memory_budget_bytes(self) -> int:
        if self.memory_budget_gb is not None:
            return int(self.memory_budget_gb * 1024**3)
        ram = machine_memory()
        return ram // 2 if ram is not None else 4 * 1024**3  # unknown: a conservative 4 GB


def machine_memory() -> int | None:
    """The memory this process may use at most: the physical memory, or its cgroup's limit where
    that is lower (a container); None where neither can be read (not POSIX)."""
    found = []
    try:
        found.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        pass
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            cap = Path(limit).read_text().strip()
        except OSError:
            continue
        if cap.isdigit() and 0 < int(cap) < 2**60:
            found.append(int(cap))
    return min(found) if found else None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere
