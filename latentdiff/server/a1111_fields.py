"""Every field of AUTOMATIC1111 1.10's txt2img and img2img API bodies and every setting its
`override_settings` and /options take that latentdiff knows, with what happens to it: honoured
(mapped to our request), of no effect (in A1111 too, or only on A1111's own files and task ids), or
refused with a 400 naming it unless it holds the value that leaves the image as A1111's default.

A1111's bodies are made from its processing classes' constructor arguments (modules/processing.py
StableDiffusionProcessing, ...Txt2Img, ...Img2Img) plus a few API fields (modules/api/models.py);
A1111_TXT2IMG / A1111_IMG2IMG list them as 1.10 has them. docs/serving.md's field table is
`markdown()` of this one (tests/server/test_a1111_fields.py holds the two equal)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

HONOURED, NO_EFFECT, REFUSED = "honoured", "no effect", "refused"

_BASE = (
    "prompt negative_prompt styles seed subseed subseed_strength seed_resize_from_h seed_resize_from_w "
    "sampler_name scheduler batch_size n_iter steps cfg_scale width height restore_faces tiling "
    "do_not_save_samples do_not_save_grid eta denoising_strength s_min_uncond s_churn s_tmax s_tmin s_noise "
    "override_settings override_settings_restore_afterwards refiner_checkpoint refiner_switch_at "
    "disable_extra_networks firstpass_image comments "
    # the API's own fields (modules/api/models.py)
    "sampler_index script_name script_args send_images save_images alwayson_scripts force_task_id infotext"
).split()
A1111_TXT2IMG = tuple(
    _BASE
    + "enable_hr firstphase_width firstphase_height hr_scale hr_upscaler hr_second_pass_steps hr_resize_x "
    "hr_resize_y hr_checkpoint_name hr_sampler_name hr_scheduler hr_prompt hr_negative_prompt".split()
)
A1111_IMG2IMG = tuple(
    _BASE
    + "init_images resize_mode image_cfg_scale mask mask_blur_x mask_blur_y mask_blur inpainting_fill "
    "inpaint_full_res inpaint_full_res_padding inpainting_mask_invert initial_noise_multiplier latent_mask "
    "mask_round include_init_images".split()
)
FORGE = ("hr_additional_modules", "distilled_cfg_scale")  # Forge's, sent by clients made for it


def is_one_of(v, values) -> bool:
    """`v in values`, but a bool is no number (True == 1 in Python; in JSON they differ)."""
    return any(v == x and isinstance(v, bool) == isinstance(x, bool) for x in values)


def _one_of(*values) -> Callable:
    return lambda v, body: is_one_of(v, values)


def _empty(v, body) -> bool:
    return not v


def _same_or_none(name: str, *same) -> Callable:
    """Neutral when left out, A1111's "use the same" words, or equal to the body's own `name`."""
    return lambda v, body: is_one_of(v, (None, "", *same)) or (isinstance(v, str) and v == getattr(body, name, None))


@dataclass(frozen=True)
class Field:
    how: str  # HONOURED, NO_EFFECT, REFUSED
    says: str  # how it maps, or what latentdiff lacks (the docs' words and the 400's)
    neutral: Callable | None = None  # REFUSED: whether a value leaves the image as A1111's default
    hires: bool = False  # read only with enable_hr, as A1111 does
    only: str | None = None  # "txt2img" or "img2img": a field of that route alone


_H, _X, _R = HONOURED, NO_EFFECT, REFUSED
_SAVES = "A1111's saving; latentdiff writes every image to --out (the server's record) and answers with it"
FIELDS: dict[str, Field] = {
    "prompt": Field(_H, "prompt (A1111 syntax)"),
    "negative_prompt": Field(_H, "negative prompt"),
    "seed": Field(_H, "seed of the first image, image k seed + k; -1: random"),
    "sampler_name": Field(_H, "sampler (GET /sdapi/v1/samplers; a name with a schedule, 'DPM++ 2M Karras', too)"),
    "sampler_index": Field(_H, "as sampler_name (its older name)"),
    "scheduler": Field(_H, "schedule type (GET /sdapi/v1/schedulers); Automatic: A1111's default of the sampler"),
    "batch_size": Field(_H, "batch_size * n_iter images (at most 16)"),
    "n_iter": Field(_H, "batch_size * n_iter images (at most 16)"),
    "steps": Field(_H, "steps; left out: the model's recommendation"),
    "cfg_scale": Field(_H, "guidance; left out: the model's recommendation"),
    "distilled_cfg_scale": Field(
        _H,
        "Forge's: on a guidance-distilled model (Flux.1 dev, Fill, Kontext) the guidance it embeds, cfg_scale then "
        "its true CFG (1: none), as Forge; without it cfg_scale is that guidance; other models: no effect, as in Forge",
    ),
    "width": Field(_H, "width; left out: the model's native size"),
    "height": Field(_H, "height; left out: the model's native size"),
    "denoising_strength": Field(_H, "img2img: strength; txt2img with enable_hr: the hires strength"),
    "eta": Field(_H, "eta of DDIM and TCD; on A1111's ancestral and SDE samplers only at their 1 (see above)"),
    "s_churn": Field(_H, "Euler's churn (Karras et al.); Heun and DPM2 take it in A1111: there only 0"),
    "s_tmin": Field(_H, "Euler's churn range; Heun and DPM2: only 0"),
    "s_tmax": Field(_H, "Euler's churn range (0: infinity); Heun and DPM2: only 0"),
    "s_noise": Field(_H, "Euler's and DPM++ SDE's noise scale; A1111's other samplers taking it: only 1"),
    "override_settings": Field(_H, "settings for this request (the settings table)"),
    "override_settings_restore_afterwards": Field(_H, "false: the overrides stay as /options settings"),
    "send_images": Field(_H, "false: `images` is empty"),
    "refiner_checkpoint": Field(_H, "an SDXL refiner of the models folder (GET /sdapi/v1/sd-models); None: none"),
    "refiner_switch_at": Field(_H, "with refiner_checkpoint: the fraction of the steps after which it takes over"),
    "infotext": Field(_H, "an A1111 parameters text whose fields fill the fields the body leaves out"),
    "disable_extra_networks": Field(_H, "true: `<lora:...>` tags are taken out of the prompt, not applied"),
    "alwayson_scripts": Field(_H, "the ControlNet extension's units; other scripts only without args"),
    "enable_hr": Field(_H, "hires fix", only="txt2img"),
    "hr_scale": Field(_H, "hires scale", hires=True, only="txt2img"),
    "hr_upscaler": Field(
        _H,
        "the Latent modes, None, Lanczos, Nearest, or an upscaler model of the models folder by A1111's name "
        "(GET /sdapi/v1/upscalers)",
        hires=True,
        only="txt2img",
    ),
    "hr_second_pass_steps": Field(_H, "hires steps (0: steps)", hires=True, only="txt2img"),
    "hr_resize_x": Field(_H, "hires target width (one scale for both sides)", hires=True, only="txt2img"),
    "hr_resize_y": Field(_H, "hires target height (one scale for both sides)", hires=True, only="txt2img"),
    "init_images": Field(_H, "the picture (exactly one)", only="img2img"),
    "resize_mode": Field(_H, "0 stretch, 1 crop, 2 fit, 3 stretch", only="img2img"),
    "mask": Field(_H, "inpainting mask (white repaints)", only="img2img"),
    "mask_blur": Field(_H, "mask blur (sets both of A1111's x and y)", only="img2img"),
    "mask_blur_x": Field(_H, "mask blur, when equal to mask_blur_y (or mask_blur is given)", only="img2img"),
    "mask_blur_y": Field(_H, "mask blur, when equal to mask_blur_x (or mask_blur is given)", only="img2img"),
    "inpainting_fill": Field(
        _H,
        "on A1111's own path all four; elsewhere 1 (original), 0 (fill) as 1 with a warning, 2, 3 refused",
        only="img2img",
    ),
    "inpaint_full_res": Field(_H, "inpaint the masked region only", only="img2img"),
    "inpaint_full_res_padding": Field(_H, "context pixels around the masked region", only="img2img"),
    "inpainting_mask_invert": Field(_H, "1: the black part repaints", only="img2img"),
    "include_init_images": Field(_H, "echo the pictures in `parameters`", only="img2img"),
    # Of no effect on the image, in A1111 too or only on A1111's own bookkeeping.
    "do_not_save_samples": Field(_X, _SAVES),
    "do_not_save_grid": Field(_X, "A1111's grid image; latentdiff makes no grids"),
    "save_images": Field(_X, _SAVES),
    "comments": Field(_X, "A1111's notes shown in its web page"),
    "force_task_id": Field(_X, "A1111's task id for its internal progress route"),
    "script_args": Field(_X, "arguments of script_name, which is refused"),
    "image_cfg_scale": Field(_X, "instruct-pix2pix models only, which latentdiff does not load", only="img2img"),
    # Refused unless at the value that changes nothing.
    "styles": Field(_H, "styles of styles.csv in the models folder (GET /sdapi/v1/prompt-styles), applied as A1111"),
    "restore_faces": Field(_R, "face restoration", _one_of(False, None)),
    "tiling": Field(_R, "tiling", _one_of(False, None)),
    "s_min_uncond": Field(_R, "skipping the negative prompt below a sigma", _one_of(0, None)),
    "firstpass_image": Field(_R, "a given first-pass image", _one_of(None)),
    "script_name": Field(_R, "A1111 scripts (GET /sdapi/v1/scripts is empty)", _empty),
    "firstphase_width": Field(_R, "the old hires first-pass size", _one_of(0, None), True, "txt2img"),
    "firstphase_height": Field(_R, "the old hires first-pass size", _one_of(0, None), True, "txt2img"),
    "hr_checkpoint_name": Field(
        _R, "another hires checkpoint", _same_or_none("", "Use same checkpoint"), True, "txt2img"
    ),
    "hr_sampler_name": Field(
        _R, "another hires sampler", _same_or_none("sampler_name", "Use same sampler"), True, "txt2img"
    ),
    "hr_scheduler": Field(
        _R, "another hires schedule type", _same_or_none("scheduler", "Use same scheduler"), True, "txt2img"
    ),
    "hr_prompt": Field(_R, "another hires prompt", _same_or_none("prompt"), True, "txt2img"),
    "hr_negative_prompt": Field(_R, "another hires negative prompt", _same_or_none("negative_prompt"), True, "txt2img"),
    "hr_additional_modules": Field(_R, "Forge's hires add-on modules", _empty, True, "txt2img"),
    "initial_noise_multiplier": Field(_R, "another initial noise multiplier", _one_of(1, None), only="img2img"),
    "latent_mask": Field(_R, "a separate latent mask", _one_of(None), only="img2img"),
    "mask_round": Field(_R, "unrounded masks", _one_of(True, None), only="img2img"),
    # The seed options (variation seed, seed resize): A1111's own path (a1111_params.seed_params).
    "subseed": Field(_H, "variation seed (with subseed_strength; -1: random), on A1111's own path"),
    "subseed_strength": Field(_H, "variation strength; above 0: A1111's own path, randn_source's noise (GPU: NV)"),
    "seed_resize_from_h": Field(_H, "seed resize height (with _w, both > 0), on A1111's own path"),
    "seed_resize_from_w": Field(_H, "seed resize width (with _h, both > 0), on A1111's own path"),
}


@dataclass(frozen=True)
class Setting:
    default: object  # A1111's default (GET /options shows it, or the value POST /options set)
    how: str
    says: str
    neutral: tuple = ()  # REFUSED: the values that change nothing


SETTINGS: dict[str, Setting] = {
    "sd_model_checkpoint": Setting(None, _H, "the model (GET /sdapi/v1/sd-models)"),
    "CLIP_stop_at_last_layers": Setting(1, _H, "clip skip"),
    "eta_ddim": Setting(0.0, _H, "DDIM's eta where the body gives none"),
    "eta_ancestral": Setting(1.0, _H, "eta of the other samplers where the body gives none"),
    "s_churn": Setting(0.0, _H, "as the field; A1111 takes the setting over the field where it is not 0"),
    "s_tmin": Setting(0.0, _H, "as the field (the setting wins where it is not 0)"),
    "s_tmax": Setting(0.0, _H, "as the field (the setting wins where it is not 0)"),
    "s_noise": Setting(1.0, _H, "as the field (the setting wins where it is not 1)"),
    "sd_vae": Setting(
        "Automatic", _H, "a VAE of the VAE folder by file name (GET /sdapi/v1/sd-vae); Automatic, None: the model's"
    ),
    "randn_source": Setting(
        "GPU", _H, "A1111's noise source (GPU: its numbers on any device, NV, CPU); set, it asks for A1111's own path"
    ),
    "s_min_uncond": Setting(0.0, _R, "skipping the negative prompt below a sigma", (0, None)),
    "eta_noise_seed_delta": Setting(0, _H, "ENSD (a seed offset of the sampler's noise), on A1111's own path"),
    "hires_fix_refiner_pass": Setting(
        "second pass", _H, "where refiner_checkpoint takes over with enable_hr: second pass, first pass, both passes"
    ),
    "uni_pc_variant": Setting("bh1", _H, "UniPC's variant: bh1, bh2, vary_coeff; on A1111's own path"),
    "uni_pc_skip_type": Setting(
        "time_uniform", _H, "UniPC's times: time_uniform, time_quadratic, logSNR; on A1111's own path"
    ),
    "uni_pc_order": Setting(3, _H, "UniPC's order (1 to 50, at most the steps); on A1111's own path"),
    "uni_pc_lower_order_final": Setting(True, _H, "UniPC's lower orders in the last steps; on A1111's own path"),
    "samples_format": Setting("png", _X, "images are PNG files", ("png",)),
    "sd_checkpoint_hash": Setting(None, _X, "read-only in A1111", (None,)),
}


def markdown() -> str:
    """docs/serving.md's field table: every field, what latentdiff does with it."""
    rows = ["| field | txt2img / img2img | latentdiff |", "|---|---|---|"]
    for name in sorted(FIELDS):
        f = FIELDS[name]
        where = f.only or "both"
        what = f.says if f.how == HONOURED else f"{f.how}: {f.says}"
        if f.how == REFUSED:
            what = f"refused unless neutral: {f.says}"
        rows.append(f"| `{name}` | {where} | {what} |")
    rows += ["", "| setting (override_settings, /options) | default | latentdiff |", "|---|---|---|"]
    for name in sorted(SETTINGS):
        s = SETTINGS[name]
        what = s.says if s.how == HONOURED else f"{s.how}: {s.says}"
        if s.how != HONOURED:
            shown = ", ".join(repr(v) for v in s.neutral)
            what = f"refused unless {shown}: {s.says}"
        rows.append(f"| `{name}` | `{s.default!r}` | {what} |")
    return "\n".join(rows)
