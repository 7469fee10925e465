"""The checkpoints of a ComfyUI API graph (images/comfy_graph.py reads the rest): each sampler node's
model and each prompt's CLIP followed through LoRA and clip-skip nodes to a CheckpointLoaderSimple, and
the SDXL refiner graph's split: the chain's first sampler nodes on one checkpoint (the base), the rest on
a second one (the refiner) with its own CLIPTextEncode nodes of the same texts."""

from __future__ import annotations

# The model and CLIP chains: {node kind: (its input of the same thing, the output that gives it)}.
MODEL_CHAIN = {"CheckpointLoaderSimple": (None, 0), "LoraLoader": ("model", 0), "LoraLoaderModelOnly": ("model", 0)}
CLIP_CHAIN = {"CheckpointLoaderSimple": (None, 1), "LoraLoader": ("clip", 1), "CLIPSetLastLayer": ("clip", 0)}
SIDES = ("positive", "negative")


def follow(g, key: str, name: str, passes: dict) -> tuple[str, list[str]]:
    """Follow input `name` of `key` through the pass-through nodes of `passes` to the checkpoint:
    (the checkpoint node, the pass-through nodes, nearest first)."""
    seen: list[str] = []
    at = key
    while True:
        target = g.link(at, name, tuple(passes))
        g.link(at, name, tuple(passes), passes[g.kind(target)][1])
        if g.kind(target) == "CheckpointLoaderSimple":
            return target, seen
        if target in seen:
            g.fail(f"its graph has a cycle through {g.kind(target)} node {target[:40]!r}")
        seen.append(target)
        at, name = target, passes[g.kind(target)][0]


def same_inputs(g, keys: list[str]) -> None:
    """Chained samplers on one checkpoint run one model and one prompt pair here."""
    for name in ("model", *SIDES):
        if len({str(g.nodes[k]["inputs"].get(name)) for k in keys}) > 1:
            g.fail(
                f"its chained samplers take different {name} inputs; latentdiff runs a chain on one model and prompt"
                " (and a refiner checkpoint's)"
            )


def split(g, keys: list[str]) -> tuple[list[str], list[str], str | None]:
    """(the base's sampler nodes, the refiner's, the refiner's checkpoint node or None) of the chain
    `keys`: the nodes after the first whose model is another checkpoint run on that one, as it is."""
    ckpts = [follow(g, k, "model", MODEL_CHAIN) for k in keys]
    n = next((i for i, (c, _) in enumerate(ckpts) if c != ckpts[0][0]), len(keys))
    rest = ckpts[n:]
    if len({c for c, _ in rest} | {ckpts[0][0]}) > 2 or any(c == ckpts[0][0] for c, _ in rest):
        g.fail("its samplers change checkpoints more than once; latentdiff runs a base, then a refiner")
    if any(chain for _, chain in rest):
        g.fail("its refiner's model goes through LoRA nodes; latentdiff runs the refiner checkpoint as it is")
    same_inputs(g, keys[:n])
    same_inputs(g, keys[n:])
    return keys[:n], keys[n:], rest[0][0] if rest else None


def refiner_prompts(g, key: str, refiner: str, texts: dict) -> None:
    """The refiner's sampler node `key` takes CLIPTextEncode nodes of the base's `texts` on the
    refiner's own CLIP (what latentdiff's refiner encodes); one line otherwise."""
    for side in SIDES:
        encode = g.link(key, side, ("CLIPTextEncode",), 0)
        at, chain = follow(g, encode, "clip", CLIP_CHAIN)
        if at != refiner or chain:
            g.fail(f"its refiner's {side} prompt is not encoded by the refiner checkpoint's own CLIP as it is")
        if g.value(encode, "text", (str,)) != texts[side]:
            g.fail(f"its refiner's {side} prompt differs from the base's; latentdiff encodes the same prompts for both")
