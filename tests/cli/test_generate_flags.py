"""`generate`'s flags are derived from GenerateConfig (config/flags.py), as finetune's are from
FinetuneConfig: every field is a flag with the field's default, and a new field is a flag without
any change to the CLI."""

import argparse
import dataclasses
import sys

from latentdiff.cli.main import build_parser
from latentdiff.config.flags import field_docs
from latentdiff.config.generate import GenerateConfig
from latentdiff.config.image_flags import IMAGE_FLAGS


@dataclasses.dataclass
class WithEta(GenerateConfig):
    eta: float = 0.0
    """DDIM eta: how much fresh noise each step adds"""


def _generate_parser(parser=None):
    parser = parser or build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["generate"]


def _action(parser, dest):
    return next((a for a in parser._actions if a.dest == dest), None)


def test_every_field_is_a_flag_with_its_default_and_its_docstring_as_help():
    parser, docs = _generate_parser(), field_docs(GenerateConfig)
    args = parser.parse_args(["a prompt"])
    cfg, _ = GenerateConfig.from_flags(vars(args))
    for f in dataclasses.fields(GenerateConfig):
        meta = f.metadata.get("flag", {})
        if not meta.get("own", True):  # image_options: its flags are ImageOptions fields, below
            continue
        action = _action(parser, meta.get("options", {}).get("dest", f.name))
        assert action is not None and action.option_strings, f"field {f.name} has no flag"
        assert action.default is argparse.SUPPRESS, f.name  # a flag left out is the field's default
        assert action.help == (meta.get("help") or docs[f.name]).replace("%", "%%"), f.name
        if f.name != "prompts":
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            assert getattr(cfg, f.name) == default, f.name
    assert cfg.prompts == ["a prompt"]


def test_the_image_flags_are_image_options_fields():
    from latentdiff.workflows.options import ImageOptions

    parser = _generate_parser()
    assert {flag.dest for flag in IMAGE_FLAGS} <= ImageOptions.names()
    for flag in IMAGE_FLAGS:
        assert _action(parser, flag.dest).option_strings == [flag.name, *flag.aliases]
    args = parser.parse_args(["x", "--hires", "1.5", "--no-upscale", "--init-image", "a.png"])
    cfg, _ = GenerateConfig.from_flags(vars(args))
    assert cfg.image_options == {"hires": 1.5, "upscale": False, "image": "a.png"}


def test_a_new_field_is_a_flag_without_touching_the_cli(monkeypatch):
    monkeypatch.setattr(sys.modules["latentdiff.cli.generate"], "GenerateConfig", WithEta)
    parser = _generate_parser(build_parser())
    assert "DDIM eta: how much fresh noise each step adds" in parser.format_help()
    assert _action(parser, "eta").option_strings == ["--eta"]
    cfg, _ = WithEta.from_flags(vars(parser.parse_args(["x", "--eta", "0.5", "--steps", "3"])))
    assert (cfg.eta, cfg.steps, cfg.prompts) == (0.5, 3, ["x"])
    assert WithEta.from_flags(vars(parser.parse_args(["x"])))[0].eta == 0.0
