"""ComfyUI PNGs: the API graph ComfyUI embeds as the text chunk "prompt" (the UI graph is "workflow"),
read back into the parameters `--from` regenerates.

The graph is a JSON object {node id: {"class_type": ..., "inputs": {...}}}; an input is a literal
or a link ["node id", output index]. Supported is ComfyUI's standard text-to-image graph (its
default workflow, with LoRAs, a separate VAE and clip skip), and its image-to-image, inpainting and
two-sampler (base + refiner) graphs (images/comfy_latent.py): from the decoded sampler node the links
are followed to the checkpoint, the two prompts, the latent it starts from, and from the image output
back through the VAE decode. Any other node, a link to nothing, a cycle or a setting latentdiff cannot
honour is refused in one line naming it.

What the graph means here: ComfyUI's noise (sampling/noise.py "comfy"), ComfyUI's prompt weights
(prompt_syntax "comfy"), its sampler and scheduler names through our sampler table. The files it
names (checkpoint, VAE, LoRAs, pictures) are resolved by config/comfy_files.py against the flags.
"""

from __future__ import annotations

from latentdiff.errors import UsageError
from latentdiff.images import comfy_latent
from latentdiff.images.comfy_checkpoints import CLIP_CHAIN, MODEL_CHAIN, follow, refiner_prompts, split
from latentdiff.images.comfy_latent import SAMPLERS
from latentdiff.sampling.sampler_table import COMFY_OWN
from latentdiff.sampling.schedulers import check_scheduler_name

OUTPUTS = ("SaveImage", "PreviewImage")
SUPPORTED = (
    "CheckpointLoaderSimple",
    "CLIPTextEncode",
    "EmptyLatentImage",
    *SAMPLERS,
    "LoraLoader",
    "LoraLoaderModelOnly",
    "VAEDecode",
    "VAELoader",
    "CLIPSetLastLayer",
    *OUTPUTS,
    *comfy_latent.PICTURE_NODES,
)
MAX_NODES = 10_000


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Graph:
    """The checked nodes of an API graph, and link following that names what is wrong."""

    def __init__(self, graph, where: str):
        self.where = where
        if not isinstance(graph, dict) or not graph:
            self.fail("its 'prompt' is not a ComfyUI API graph (a JSON object of nodes)")
        if len(graph) > MAX_NODES:
            self.fail(f"its graph has {len(graph):,} nodes; at most {MAX_NODES:,} are read")
        self.nodes = {}
        for key, node in graph.items():
            ok = isinstance(node, dict) and isinstance(node.get("class_type"), str)
            if not ok or not isinstance(node.get("inputs", {}), dict):
                self.fail(f"node {_short(key)} is not a node (an object with a class_type and inputs)")
            self.nodes[key] = node
        for key, node in self.nodes.items():
            if node["class_type"] not in SUPPORTED:
                self.fail(
                    f"node {_short(key)} is a {_short(node['class_type'])}, which latentdiff does not run; "
                    f"it regenerates graphs of {', '.join(SUPPORTED)}"
                )

    def fail(self, reason: str):
        raise UsageError(f"{self.where}: {reason}")

    def kind(self, key: str) -> str:
        return self.nodes[key]["class_type"]

    def value(self, key: str, name: str, types: tuple, default=None):
        """Node `key`'s literal input `name` (`default` when absent and given), of one of `types`."""
        inputs = self.nodes[key].get("inputs", {})
        if name not in inputs and default is not None:
            return default
        v = inputs.get(name)
        if isinstance(v, bool) or not isinstance(v, types):
            what = "missing" if name not in inputs else f"{_short(v)}, not a literal {types[0].__name__}"
            self.fail(f"{self.kind(key)} node {_short(key)}: input {name!r} is {what}")
        return v

    def link(self, key: str, name: str, kinds: tuple, output: int | None = None) -> str:
        """The node input `name` of node `key` links to: one of `kinds`, from its output `output`
        (None: any)."""
        v = self.nodes[key].get("inputs", {}).get(name)
        where = f"{self.kind(key)} node {_short(key)}: input {name!r}"
        if not (isinstance(v, list) and len(v) == 2 and isinstance(v[0], (str, int)) and isinstance(v[1], int)):
            self.fail(f"{where} is {_short(v)}, not a link [node id, output index]")
        target = str(v[0])
        if target not in self.nodes:
            self.fail(f"{where} links to node {_short(v[0])}, which the graph does not have")
        if self.kind(target) not in kinds:
            self.fail(f"{where} links to a {self.kind(target)}; latentdiff expects {' or '.join(kinds)} there")
        if output is not None and v[1] != output:
            self.fail(f"{where} takes output {v[1]} of {self.kind(target)} node {_short(target)}, expected {output}")
        return target

    def one(self, kinds: tuple) -> str:
        found = [k for k in self.nodes if self.kind(k) in kinds]
        if len(found) != 1:
            self.fail(f"its graph has {len(found)} {' / '.join(kinds)} nodes; latentdiff regenerates graphs with one")
        return found[0]


def _loras(g: Graph, model_chain: list[str], clip_chains: list[list[str]]) -> list[dict]:
    """The LoRAs of the graph, each with its model (UNet) and CLIP (text encoder) scale: a
    LoraLoaderModelOnly, or a LoraLoader whose CLIP output is not used, merges into the UNet alone."""
    if len({tuple(c) for c in clip_chains}) > 1:
        g.fail("its two prompts go through different LoRA / clip-skip nodes; latentdiff encodes both alike")
    on_clip = [k for k in clip_chains[0] if g.kind(k) == "LoraLoader"]
    out = []
    for key in model_chain[::-1]:  # the order ComfyUI applies them: nearest the checkpoint first
        name = g.value(key, "lora_name", (str,))
        unet = g.value(key, "strength_model", (int, float))
        te = g.value(key, "strength_clip", (int, float)) if key in on_clip else 0
        out.append({"name": name, "scale": float(unet), "te_scale": float(te)})
    if any(k not in model_chain for k in on_clip):
        g.fail("a LoraLoader's CLIP output is used but not its MODEL output; latentdiff merges a LoRA into both")
    return out


def _clip_skip(g: Graph, chain: list[str]):
    layers = [g.value(k, "stop_at_clip_layer", (int,)) for k in chain if g.kind(k) == "CLIPSetLastLayer"]
    if not layers:
        return None
    if not -64 <= layers[0] <= -1:
        g.fail(f"CLIPSetLastLayer's stop_at_clip_layer is {layers[0]}; ComfyUI takes -1 (the last layer) to -24")
    return -layers[0]  # nearest the encoder wins, as the clip's last setting does in ComfyUI


def _sampler(g: Graph, key: str, stage: dict) -> dict:
    """The first sampler node's settings as our parameters."""
    where = f"{g.kind(key)} node {_short(key)}"
    settings = {"seed": stage["seed"], "steps": stage["steps"], "guidance": stage["cfg"]}
    return {**settings, **_scheduler(g, where, stage["sampler"], stage["scheduler"])}


def _scheduler(g: Graph, where: str, name: str, schedule: str) -> dict:
    """Our sampler for ComfyUI's sampler and scheduler names. ComfyUI's own k-diffusion samplers run on
    ComfyUI's own path (sampling/comfy.py) with every ComfyUI scheduler; the others on diffusers' classes,
    where ComfyUI's default scheduler "normal" (timesteps evenly from the last to the first, both in) is
    our Uniform (k-diffusion's get_sigmas) for a sampler that takes no sigma list, with a note."""
    own = name in COMFY_OWN
    try:
        return {"scheduler": check_scheduler_name(name, schedule, a1111=own), "notes": [], "own": own}
    except UsageError as e:
        if schedule == "normal":
            try:
                uniform = check_scheduler_name(name, "uniform")
            except UsageError:
                pass
            else:
                return {
                    "scheduler": uniform,
                    "notes": [f"ComfyUI's scheduler 'normal' runs as {uniform!r}"],
                    "own": own,
                }
        g.fail(f"{where}: sampler {name!r} with scheduler {schedule!r}: {e}")


# ComfyUI's samplers whose step noise comes from its default noise sampler (a generator on the
# latent's device) besides the ancestral ones
GENERATOR_NOISE = ("er_sde", "sa_solver", "sa_solver_pece", "seeds_2", "seeds_3", "ddpm", "lcm")


def _draws(name: str) -> bool:
    return "ancestral" in name or name in GENERATOR_NOISE


def _noise(sampler: dict, name: str) -> str:
    """ComfyUI's noise: where a sampler of ComfyUI's own path draws step noise from a generator (the
    ancestral ones, ER-SDE, SA-Solver, SEEDS), as ComfyUI draws it on an NVIDIA GPU, where most ComfyUI
    images are made."""
    if sampler["own"] and _draws(name):
        sampler["notes"].append(
            f"{name}'s step noise is drawn as ComfyUI draws it on an NVIDIA GPU (--noise comfy: as on a CPU)"
        )
        return "comfy_nv"
    return "comfy"


def _vae(g: Graph, decode: str, ckpt: str, refiner: str | None) -> str:
    """The VAEDecode's VAE node: the model's checkpoint's or a VAELoader; with a refiner, the refiner's."""
    own = refiner or ckpt
    vae = g.link(decode, "vae", ("CheckpointLoaderSimple", "VAELoader"))
    if vae != own and refiner is not None:
        g.fail("its refiner graph decodes with another VAE than the refiner checkpoint's; latentdiff decodes with that")
    if vae != own and g.kind(vae) == "CheckpointLoaderSimple":
        g.fail("its VAE comes from another checkpoint node than its model")
    g.link(decode, "vae", (g.kind(vae),), 2 if vae == own else 0)
    return vae


def _run(g: Graph, keys: list[str], begin: dict, own: bool, refiner_keys: list[str]) -> dict | None:
    """The graph's comfy_graph run (workflows/comfy_start.py) where it needs more than one KSampler
    from an empty latent; None where it does not. The refiner's stages say so."""
    stages = [{**comfy_latent.stage(g, k), **({"refiner": True} if k in refiner_keys else {})} for k in keys]
    if "image" not in begin and len(stages) == 1 and not comfy_latent.partial(stages[0]):
        return None
    if not own or any(st["sampler"] not in COMFY_OWN for st in stages):
        g.fail(
            "its samplers start from a picture or run part of the steps, which latentdiff runs on ComfyUI's own "
            f"path for its samplers {', '.join(COMFY_OWN)}"
        )
    return {"stages": stages, **{k: v for k, v in begin.items() if k in comfy_latent.RUN_KEYS}}


def params_from_comfy(graph, where: str) -> dict:
    """The parameters of ComfyUI API graph `graph` (parsed JSON) for GenerateConfig.from_image, plus
    "comfy": the file names it loads ({"checkpoint", "vae", "loras", "run"}) for config/comfy_files.py."""
    g = Graph(graph, where)
    outputs = [k for k in g.nodes if g.kind(k) in OUTPUTS]
    decodes = {g.link(k, "images", ("VAEDecode",), 0) for k in outputs}
    if len(decodes) != 1:
        g.fail(f"its graph has {len(decodes)} decoded images to save; latentdiff regenerates graphs with one")
    decode = decodes.pop()
    keys = comfy_latent.chain(g, g.link(decode, "samples", SAMPLERS, 0))
    key = keys[0]
    base_keys, refiner_keys, refiner = split(g, keys)
    ckpt, model_chain = follow(g, key, "model", MODEL_CHAIN)
    texts, chains = {}, []
    for side in ("positive", "negative"):
        encode = comfy_latent.prompt(g, key, side)
        texts[side] = g.value(encode, "text", (str,))
        at, chain = follow(g, encode, "clip", CLIP_CHAIN)
        chains.append(chain)
        if at != ckpt:
            g.fail(f"its {side} prompt's CLIP comes from another checkpoint node than its model")
    if refiner is not None:
        refiner_prompts(g, refiner_keys[0], refiner, texts)
    vae = _vae(g, decode, ckpt, refiner)
    begin = comfy_latent.start(g, key, vae)
    batch = begin.get("batch", 1)
    clip_skip = _clip_skip(g, chains[0])
    first = comfy_latent.stage(g, key)
    sampler = _sampler(g, key, first)
    names = [comfy_latent.stage(g, k)["sampler"] for k in keys]
    noise = _noise(sampler, next((n for n in names if _draws(n)), names[0]))
    run = _run(g, keys, begin, sampler["own"], refiner_keys)
    notes, _ = sampler.pop("notes"), sampler.pop("own")
    if clip_skip is not None and clip_skip > 1:
        notes.append(
            f"CLIPSetLastLayer {-clip_skip} is read as --clip-skip {clip_skip} (SD 1.x/2.x); for an SDXL "
            f"checkpoint ComfyUI's {-clip_skip} is --clip-skip {clip_skip - 1}: pass that"
        )
    return {
        "prompt": texts["positive"],
        "negative_prompt": texts["negative"],
        **sampler,
        "width": begin.get("width"),
        "height": begin.get("height"),
        "clip_skip": clip_skip,
        "prompt_syntax": "comfy",
        "noise": noise,
        "noise_batch": batch,
        "noise_index": 0,
        "num_images": batch,
        "comfy": {
            "checkpoint": g.value(ckpt, "ckpt_name", (str,)),
            "vae": g.value(vae, "vae_name", (str,)) if vae not in (ckpt, refiner) else None,
            "refiner": None if refiner is None else g.value(refiner, "ckpt_name", (str,)),
            "loras": _loras(g, model_chain, chains),
            "run": run,
        },
        "notes": notes,
    }
