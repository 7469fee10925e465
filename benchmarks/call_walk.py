"""Follow a tiny `finetune` call through latentdiff's own modules and count how often the walk
climbs back into a module it has already been in (the structure goal of issue 15).

    python benchmarks/call_walk.py [--method lora|full] [--steps 2] [--validate] [--all]
    python benchmarks/call_walk.py --command generate

`--command generate` walks `Pipeline.from_pretrained(model)` and one 2-step 64x64 generate call on a
tiny SD1 model (latentdiff.models.testing.make_tiny_model), following every module (as `--all`),
with pipeline.py as the hub: the loading trip of issue 23 should go down once.

The walk (a reader's walk, not a profile):
- `sys.setprofile` records every call of a function defined under latentdiff/ while
  `training/loop.py:finetune` runs. Code of other libraries in between is transparent (a
  latentdiff function called back by torch or accelerate counts as called by the nearest latentdiff
  function below it on the stack); module bodies run by (lazy) imports are not part of the walk.
- Each function is read once: it hangs under the function that called it first, children in
  the order of their first call. Later calls (the next training step) add nothing.
- The walk is that tree, depth first. It follows the training code (latentdiff/training/): a call
  into the rest of latentdiff (loading a model, tokenizing, saving a LoRA) is entered but not
  followed inside, as a call into a library would be. `--all` follows everything.

Counts printed:
- modules: distinct latentdiff modules the walk enters.
- stays: calls from one module into another, plus the start (the walk's length in modules).
- climbs back: calls into a module the walk has already been in, made from any module but
  training/loop.py. loop.py is the hub whose job is to call each part in turn; everywhere else a
  second entry means a part is split over modules that call each other (A -> B, back in A, then
  A -> B again; or B calling back up into loop.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PACKAGE = str(ROOT / "latentdiff") + "/"


def module_of(filename: str) -> str | None:
    """'training/loop.py' for a file under latentdiff/, else None."""
    return filename[len(PACKAGE) :] if filename.startswith(PACKAGE) else None


class FirstCallTree:
    """sys.setprofile hook: latentdiff functions, each under the function that first called it."""

    def __init__(self, *root_codes):
        self.roots = root_codes
        self.children: dict = {code: [] for code in root_codes}

    def __call__(self, frame, event, arg):
        code = frame.f_code
        if (
            event != "call"
            or code in self.children
            or code.co_name == "<module>"
            or module_of(code.co_filename) is None
        ):
            return
        parent = frame.f_back
        while parent is not None and module_of(parent.f_code.co_filename) is None:
            parent = parent.f_back
        if parent is None or parent.f_code.co_name == "<module>" or parent.f_code not in self.children:
            return  # import-time code, or outside the traced call
        self.children[parent.f_code].append(code)
        self.children[code] = []

    def calls(self, scope: str = "") -> list[tuple[int, object, object]]:
        """(depth, caller, callee) of every call in the depth-first walk, depth counted in module
        changes; functions in modules outside `scope` (a path prefix) are entered, not followed."""
        out = []

        def visit(code, depth):
            if not module_of(code.co_filename).startswith(scope):
                return
            for child in self.children[code]:
                out.append((depth, code, child))
                visit(child, depth + (child.co_filename != code.co_filename))

        for root in self.roots:
            visit(root, 0)
        return out


def report(calls, hub: str, hubs: tuple[str, ...] = ()) -> dict:
    """Print the walk's cross-module calls (indented by depth) and return the counts. `hubs`: further
    modules whose job is to call each part in turn (their calls are not climbs). new_back_edges counts
    only the climbs along a module-to-module edge the walk has not taken before (a caller going back to a
    helper module it already used, e.g. one check after another, counts once)."""
    seen, stays, climbs, edges, new_edges = {hub}, 1, 0, set(), 0
    for depth, caller, callee in calls:
        src, dst = module_of(caller.co_filename), module_of(callee.co_filename)
        if src == dst:
            continue
        stays += 1
        climb = dst in seen and src != hub and src not in hubs
        climbs += climb
        new_edges += climb and (src, dst) not in edges
        edges.add((src, dst))
        seen.add(dst)
        print(f"{'  ' * depth}{dst}: {callee.co_qualname}{'   <- climb back' if climb else ''}")
    return {"modules": len(seen), "stays": stays, "climbs_back": climbs, "new_back_edges": new_edges}


def run(args) -> FirstCallTree:
    with tempfile.TemporaryDirectory(prefix="call-walk-") as tmp:
        return _run(args, Path(tmp))


def _run(args, tmp: Path) -> FirstCallTree:
    from PIL import Image

    from latentdiff.models.testing import make_tiny_model
    from latentdiff.training.config import FinetuneConfig
    from latentdiff.training.loop import finetune

    model = make_tiny_model(tmp / "model")
    (tmp / "ds").mkdir()
    for i, color in enumerate(["red", "green"]):
        Image.new("RGB", (64, 64), color).save(tmp / "ds" / f"{i}.png")
        (tmp / "ds" / f"{i}.txt").write_text(f"a {color} square")
    cfg = FinetuneConfig(
        dataset=str(tmp / "ds"),
        model=str(model),
        out=str(tmp / "run"),
        method=args.method,
        max_steps=args.steps,
        batch_size=2,
        resolution=64,
        checkpoint_every=args.steps,
        log_every=1,
        validate_every=args.steps if args.validate else 0,
        validation_steps=1,
        report_to=args.report_to,
    )
    tree = FirstCallTree(finetune.__code__)
    sys.setprofile(tree)
    try:
        finetune(cfg)
    finally:
        sys.setprofile(None)
    return tree


def run_generate() -> FirstCallTree:
    """The tree of `Pipeline.from_pretrained` and one generate call on a tiny SD1 model."""
    try:
        from latentdiff.models.testing import make_tiny_model
    except ImportError:  # a tree from before the layout of issue 23
        from latentdiff.testing import make_tiny_model
    from latentdiff.pipeline import Pipeline

    with tempfile.TemporaryDirectory(prefix="call-walk-") as tmp:
        model = make_tiny_model(Path(tmp) / "model")
        tree = FirstCallTree(Pipeline.from_pretrained.__func__.__code__, Pipeline.__call__.__code__)
        sys.setprofile(tree)
        try:
            pipe = Pipeline.from_pretrained(str(model), device="cpu")
            pipe.progress = False
            pipe("a red apple", steps=2, width=64, height=64, seed=0)
        finally:
            sys.setprofile(None)
    return tree


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--command", default="finetune", choices=("finetune", "generate"))
    p.add_argument("--method", default="lora", choices=("lora", "full"))
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--validate", action="store_true", help="also write validation images at the last step")
    p.add_argument("--report-to", default="none")
    p.add_argument("--all", action="store_true", help="follow calls into every latentdiff module, not only training/")
    p.add_argument(
        "--hub",
        action="append",
        default=[],
        help="generate: a further hub module (repeatable), e.g. workflows/text_to_image.py, formats/load.py",
    )
    args = p.parse_args()
    if args.command == "generate":
        print("pipeline.py: Pipeline.from_pretrained, Pipeline.__call__")
        print(" ".join(f"{k}={v}" for k, v in report(run_generate().calls(""), "pipeline.py", tuple(args.hub)).items()))
        return
    calls = run(args).calls("" if args.all else "training/")
    print("training/loop.py: finetune")
    print(" ".join(f"{k}={v}" for k, v in report(calls, "training/loop.py").items()))


if __name__ == "__main__":
    main()
