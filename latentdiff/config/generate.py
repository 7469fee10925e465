"""`GenerateConfig`: everything `latentdiff generate` needs, one field per flag; from flags, a YAML file
or an image's recorded parameters (`--from`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from latentdiff.config import comfy_files
from latentdiff.config.common import check
from latentdiff.config.control_flags import CONTROL_FLAGS, MODES, units
from latentdiff.config.flags import Flag, flag, read_prompts_file
from latentdiff.config.image_flags import IMAGE_FLAGS, image_options
from latentdiff.config.image_prompt_flags import image_prompts, replay_prompts
from latentdiff.config.noise_params import NAMES as NOISE_NAMES
from latentdiff.config.noise_params import NOISE_FLAGS, noise_request
from latentdiff.config.params import OFFLOAD_MODES, THREADS_HELP, check_fields, flag_label, recorded_label
from latentdiff.config.replay import addon_specs, recorded_controls
from latentdiff.prompts.syntax import SYNTAXES
from latentdiff.sampling.noise import NOISE_MODES
from latentdiff.sampling.schedulers import MIN_STEPS, NAMES, SCHEDULE_NAMES

# The recorded parameters a --from replay takes under their own names.
RECORDED_AS_IS = ("model", "steps", "guidance", "seed", "width", "height", "scheduler", "eta", "s_noise", "refiner")
RECORDED_AS_IS += ("vae", "components", "refiner_start", "clip_skip", "lora_dir", "variations", "noise_level")
RECORDED_AS_IS += ("prior", "prior_steps", "prior_guidance", "cfg_normalization", "cfg_truncation", "comfy_graph")
RECORDED_AS_IS += ("speed",)
STEPS_HELP = f"denoising steps (default: the model's recommendation, else 25; with --scheduler {MIN_STEPS})"


@dataclass
class GenerateConfig:
    """Everything `latentdiff generate` needs; None means "the model's recommendation". Each field
    is a flag of `generate` (config/flags.py): its docstring is the flag's help, its `flag(...)`
    metadata says what the type does not."""

    choices = {"prompt_syntax": SYNTAXES, "control_mode": MODES, "noise": NOISE_MODES, "offload": OFFLOAD_MODES}

    model: str | None = None
    """model directory, single-file checkpoint (.safetensors), hub id (org/name), or omit for the shipped default"""
    out: str = "outputs"
    """output folder (default: outputs/); files are never overwritten"""
    steps: int | None = field(default=None, metadata=flag(help=STEPS_HELP))
    guidance: float | None = None
    """classifier-free guidance scale; 1 disables CFG (default: model's, else 7.5)"""
    negative: str = ""
    """negative prompt (default: empty)"""
    true_cfg: float = 1.0
    """a guidance-distilled model's (Flux dev's) true CFG scale with --negative; --guidance is then embedded (default: 1, off)"""
    cfg_normalization: float = 0.0
    """Z-Image: cap the guided prediction's norm at this many conditional norms (default: 0, off)"""
    cfg_truncation: float = 1.0
    """Z-Image: stop guiding once this fraction of the denoising is done (default: 1, off)"""
    seed: int | None = field(
        default=0,
        metadata=flag(
            extra=(  # None: a random seed, drawn once and recorded
                Flag("--random-seed", "draw a random seed (it is recorded in the PNG)", dict(action="store_true")),
            )
        ),
    )
    """seed of the first image; image k uses seed+k (default: 0)"""
    width: int | None = None
    """image width in pixels (default: the model's native size)"""
    height: int | None = None
    """image height in pixels (default: the model's native size)"""
    num_images: int = 1
    """images per prompt (default: 1)"""
    scheduler: str | None = field(
        default=None,
        metadata=flag(help=f"{NAMES}, or an A1111/ComfyUI sampler name, e.g. 'DPM++ 2M Karras' (default: the model's)"),
    )
    schedule_type: str | None = field(default=None, metadata=flag(help=f"{SCHEDULE_NAMES} (default: automatic)"))
    eta: float | None = None
    """noise of DDIM and TCD steps, A1111's eta (default: the sampler's, 0 for DDIM)"""
    s_noise: float | None = None
    """noise scale of Euler's churn and DPM++ SDE's steps, A1111's sigma noise (default: 1)"""
    prompt_syntax: str = "a1111"
    """a1111: (word:1.3) / (word) / [word] emphasis, \\( escapes, BREAK (default); plain: the text as written;
    comfy: ComfyUI's (word:1.3) / (word) weights"""
    noise: str = "per_image"
    """per_image: image k's noise from seed + k (default); comfy: ComfyUI's (one draw for the batch, image k its
    row k; its own KSampler for its k-diffusion samplers); comfy_nv: that as ComfyUI draws it on an NVIDIA GPU"""
    noise_options: dict = field(default_factory=dict, metadata=flag(own=False))  # --from: ComfyUI's batch and row
    comfy_graph: dict | None = field(default=None, metadata=flag(own=False))  # --from: workflows/comfy_start.py
    clip_skip: int | None = field(default=None, metadata=flag(metavar="N"))
    """use the N-th text-encoder layer from the end, A1111 numbering: 1 = last (default: the model's, else 1)"""
    loras: list[str] = field(
        default_factory=list, metadata=flag("--lora", action="append", metavar="PATH[:SCALE[:TE_SCALE]]")
    )
    """merge a LoRA (kohya/A1111, LyCORIS LoCon, diffusers, or a latentdiff LoRA run) at SCALE (default 1), into the
    text encoder at TE_SCALE where given; repeat to stack"""
    embeddings: list[str] = field(
        default_factory=list, metadata=flag("--embedding", action="append", metavar="FILE[:TOKEN]")
    )
    """a textual-inversion embedding (A1111 .pt/.safetensors, diffusers learned_embeds); write TOKEN (default: the
    file name) in the prompt; repeatable"""
    lora_dir: str | None = field(default=None, metadata=flag(metavar="DIR"))
    """the folder of LoRA files a prompt's <lora:NAME:WEIGHT> tags name by file name (A1111's models/Lora)"""
    embedding_dir: str | None = field(default=None, metadata=flag(metavar="DIR"))
    """load every embedding file in DIR, each written in the prompt by its file name (A1111's embeddings folder)"""
    device: str = "auto"
    """auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps (default: auto)"""
    dtype: str = "auto"
    """auto, fp32, fp16, bf16 (default: auto: on a GPU the family's rule, docs/models.md#memory; on a CPU bf16 where native for large models, else fp32)"""
    offload: str = "none"
    """none; model: each component on the GPU only while it works; sequential: one layer at a time (slow) (default: none)"""
    num_threads: int | None = field(default=None, metadata=flag(metavar="N", help=THREADS_HELP))
    speed: str = "off"
    """CPU levers: auto (those that measured faster here), or channels-last, compile, int8 joined by commas (default: off)"""
    prompts: list[str] = field(
        default_factory=list,
        metadata=flag(
            "--prompts",
            "text file with one prompt per line",
            dest="prompts_file",
            type=str,
            extra=(
                Flag("prompt", "the text prompt (or use --prompts / --from)", dict(nargs="?")),
                Flag(
                    "--from",
                    "regenerate a latentdiff PNG from its recorded parameters, or an A1111 PNG, JPEG or WebP from its "
                    "PNG Info (other flags override)",
                    dict(dest="from_image", metavar="IMAGE"),
                ),
            ),
        ),
    )
    """Prompts to render; each gets `num_images` images."""
    allow_pickle: bool = field(default=False, metadata=flag(action="store_true"))
    """allow pickle (.bin/.ckpt) weights; still loaded with weights_only=True"""
    quiet: bool = field(default=False, metadata=flag(action="store_true"))
    """no progress bar, no loading line (notes and errors still show)"""
    compile: bool | str = field(
        default=False,
        metadata=flag(
            action="store_true",
            extra=(
                Flag(
                    "--compile-mode",
                    "implies --compile: auto (the default), default, reduce-overhead, max-autotune, "
                    "max-autotune-no-cudagraphs, fp8 (CUDA, needs torchao)",
                    dict(metavar="MODE"),
                ),
            ),
        ),
    )
    """torch.compile the UNet and VAE decoder: faster steps after a slow first call (minutes; cached on disk for
    later processes); on CUDA with CUDA graphs"""
    a1111_noise: dict = field(default_factory=dict, metadata=flag(own=False, extra=NOISE_FLAGS))
    """A1111's noise (rng, variation seed and strength, seed resize, ENSD): config/noise_params.py."""
    image_options: dict = field(default_factory=dict, metadata=flag(own=False, extra=IMAGE_FLAGS))
    """Start from an image, hires fix, upscaler: `latentdiff.workflows.options.ImageOptions` fields."""
    vae: str | None = field(default=None, metadata=flag(metavar="DIR|FILE"))
    """decode with this VAE instead of the model's own (folder or .safetensors)"""
    components: str | None = field(default=None, metadata=flag(metavar="DIR"))
    """for a transformer file (Flux.1, SD 3/3.5, Chroma, FLUX.2, Qwen-Image, Z-Image) as --model: the diffusers folder of that family whose text
    encoders, tokenizers and VAE complete it (its own transformer is not read)"""
    text_encoders: list[str] = field(
        default_factory=list, metadata=flag("--text-encoder", action="append", metavar="FILE")
    )
    """a text encoder file (transformers' layout, e.g. ComfyUI's clip_l.safetensors or t5xxl_fp16.safetensors) used
    in place of the model's encoder whose tensors it fits; repeatable"""
    refiner: str | None = field(default=None, metadata=flag(metavar="M"))
    """SDXL refiner model that finishes the denoising (SDXL base + refiner)"""
    refiner_start: float | None = field(default=None, metadata=flag(metavar="F"))
    """fraction of the steps after which the refiner takes over (default: 0.8)"""
    controls: list[str] = field(
        default_factory=list, metadata=flag("--control", action="append", metavar="IMAGE:MODEL[:WEIGHT[:START:END]]")
    )
    """a ControlNet or T2I-Adapter unit: its control image, its model (folder or file), its weight (0..2, default 1)
    from fraction START to END of the steps (default 0:1); repeatable. Paths may hold ':' (the numbers are read
    from the right)"""
    control_options: dict = field(default_factory=dict, metadata=flag(own=False, extra=CONTROL_FLAGS))
    """Each unit's preprocessor, its resolution and the map's resize (config/control_flags.py)."""
    control_mode: str = "balanced"
    """balanced, prompt (A1111's My prompt is more important), control (ControlNet is more important), guess
    (diffusers' guess mode) (default: balanced)"""
    image_prompts: list[str] = field(
        default_factory=list, metadata=flag("--image-prompt", action="append", metavar="IMG[:SCALE]")
    )
    """an IP-Adapter image prompt: a picture (for a FaceID adapter, a face-embedding file .npy/.safetensors) at
    SCALE (0..2, default 1); repeatable (at most 8); needs --ip-adapter. Paths may hold ':'"""
    ip_adapter: str | None = field(default=None, metadata=flag(metavar="FILE"))
    """the IP-Adapter of the image prompts (ip-adapter_*.safetensors; a .bin needs --allow-pickle)"""
    image_encoder: str | None = field(default=None, metadata=flag(metavar="DIR"))
    """the adapter's CLIP image encoder folder (default: image_encoder/ beside the adapter, or the h94/IP-Adapter
    layout's models/ or sdxl_models/ one)"""
    image_prompt_options: dict = field(default_factory=dict, metadata=flag(own=False))
    """From --from: the image prompts the image recorded (config/image_prompt_flags.py)."""
    variations: str | None = field(default=None, metadata=flag(metavar="IMG"))
    """Stable unCLIP: variations of the picture IMG, from its CLIP image embedding (the prompt may be left out)"""
    prior: str | None = field(default=None, metadata=flag(metavar="DIR"))
    """Stable unCLIP: a Kandinsky 2.2 prior folder (or Karlo's UnCLIPPipeline folder) that makes the image embedding from the prompt (default: the model's)"""
    noise_level: int | None = field(default=None, metadata=flag(metavar="N"))
    """Stable unCLIP: noise added to the image embedding, 0 to the image-noising scheduler's last step (default: 0)"""
    prior_steps: int | None = field(default=None, metadata=flag(metavar="N"))
    """Stable unCLIP with a prior: the prior's sampling steps (default: 25)"""
    prior_guidance: float | None = field(default=None, metadata=flag(metavar="G"))
    """Stable unCLIP with a prior: the prior's classifier-free guidance scale (default: 4)"""

    def __post_init__(self):
        checked = check_fields({f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, flag_label)
        for name, value in checked.items():
            setattr(self, name, value)
        if not self.prompts and self.variations:  # variations need no words: the picture is the prompt
            self.prompts = [""]
        check(bool(self.prompts), "no prompt given: pass PROMPT, --prompts FILE or --from IMAGE.png")
        check(self.refiner_start is None or self.refiner is not None, "--refiner-start needs --refiner MODEL")
        check(
            self.refiner_start is None or 0 < self.refiner_start < 1,
            f"--refiner-start must be between 0 and 1 (exclusive), got {self.refiner_start}",
        )
        check(
            self.control_mode in MODES, f"--control-mode must be one of {', '.join(MODES)}, got {self.control_mode!r}"
        )
        self.control_units()
        self.image_prompt_list()
        noise_request(flag_label, self.a1111_noise)

    def control_units(self) -> list[dict]:
        """Each --control unit as a checked record (config/control_flags.units)."""
        return units(self.controls, self.control_options)

    def image_prompt_list(self) -> list[dict]:
        """Each --image-prompt as a checked record (config/image_prompt_flags.image_prompts)."""
        recorded = self.image_prompt_options.get("recorded")
        return image_prompts(self.image_prompts, self.ip_adapter, self.image_encoder, recorded)

    @classmethod
    def from_image(cls, params: dict, source: str = "the --from image", **overrides) -> "GenerateConfig":
        """Rebuild a config from a PNG's recorded parameters (checked like the flags, each error
        naming `source`); explicit flags override them."""
        recorded = {k: params.get(k) for k in RECORDED_AS_IS}
        recorded.update(
            prompts=[params.get("prompt")],
            true_cfg=params.get("true_cfg", 1.0),
            negative=params.get("negative_prompt", ""),
            dtype=params.get("dtype") or "auto",
            text_encoders=params.get("text_encoders") or [],
            loras=addon_specs(params.get("loras"), "scale"),
            embeddings=addon_specs(params.get("embeddings"), "token"),
            # Images from before the A1111 syntax existed were rendered with the text as written.
            prompt_syntax=params.get("prompt_syntax", "plain"),
            noise=params.get("noise", "per_image"),
            noise_options={"batch": params.get("noise_batch"), "index": params.get("noise_index", 0)},
            num_images=params.get("num_images", 1),  # a ComfyUI graph's batch
        )
        given = {k: v for k, v in overrides.items() if v is not None}
        noise = {k: params[k] for k in NOISE_NAMES if params.get(k) is not None}
        given["a1111_noise"] = {**noise, **given.get("a1111_noise", {})}  # checked by __post_init__, naming the flags
        recorded.update(recorded_controls(params, source, given))
        if params.get("image_prompts"):
            records = params["image_prompts"]
            specs = replay_prompts(records, source, given.get("ip_adapter"), given.get("image_prompts"))
            recorded.update(image_prompts=specs, image_prompt_options={"recorded": records})
        kept = {k: v for k, v in recorded.items() if k not in given}
        kept = check_fields({**kept, "a1111_noise": given["a1111_noise"]}, recorded_label(source))
        kept.pop("a1111_noise")
        return cls(**{**kept, **given})

    @classmethod
    def from_flags(cls, values: dict, recorded: dict | None = None, note=lambda text: None):
        """`generate`'s config from the flags given (`values`, as add_flags leaves them): the prompt and
        --prompts FILE, --random-seed, --compile-mode and the image flags; with --from IMAGE.png,
        `recorded` holds its parameters (images.write.read_params, read by the caller), which the flags
        override (`note` tells what an A1111 image's do not carry over). Returns (config, the device
        recorded in the image where its dtype is used)."""
        prompts = []
        if values.get("prompt") is not None:
            check(bool(values["prompt"].strip()), "the prompt is empty; give some text, or --prompts FILE")
            prompts.append(values["prompt"])
        if values.get("prompts_file"):
            prompts += read_prompts_file(values["prompts_file"])
        names = {f.name for f in dataclasses.fields(cls)}
        flags = {k: v for k, v in values.items() if k in names}
        if values.get("compile_mode"):
            flags["compile"] = values["compile_mode"]
        if values.get("random_seed"):
            flags.pop("seed", None)
        image_flags = {f.dest: values[f.dest] for f in IMAGE_FLAGS if f.dest in values}
        names = {"control_modules": "modules", "control_res": "res", "control_resize": "resize"}
        flags["control_options"] = {ours: values[dest] for dest, ours in names.items() if values.get(dest)}
        flags["a1111_noise"] = {k: values[k] for k in NOISE_NAMES if values.get(k) is not None}
        recorded_device = None
        if values.get("from_image"):
            params = dict(recorded or {})
            if "comfy" in params:  # a ComfyUI graph: the files it names, found from the flags
                params, image_flags = comfy_files.from_flags(params, flags, image_flags, values["from_image"])
            notes = params.pop("notes", [])  # an A1111 image: what does not carry over
            recorded_device = None if values.get("dtype") else params.get("device")
            options = image_options(image_flags, params)
            cfg = cls.from_image(params, values["from_image"], **flags, prompts=prompts or None, image_options=options)
            for text in notes:  # once its values are checked: a refusal stays one line
                note(text)
        else:
            cfg = cls(prompts=prompts, image_options=image_options(image_flags), **flags)
        if values.get("random_seed"):
            cfg.seed = None
        return cfg, recorded_device
