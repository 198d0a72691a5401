"""GenerationSettings: every generation setting's default, validation and per-label policy in one place,
and the flags of `mien generate` / `mien evaluate` derived from it."""

import argparse
import dataclasses
import subprocess
import sys

import pytest

from mien.errors import MienError
from mien.expression.targets import ExpressionRequest
from mien.settings import (LABEL_POLICY, RECOGNISER_GUIDANCE, RECOGNISER_GUIDANCE_WITH_CONTRAST, SAMPLER_NAMES,
                           GenerationSettings)


def test_importing_settings_loads_no_torch():
    code = "import sys, mien.settings, mien.cli.settings_flags; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_sampler_names_are_the_samplers():
    from mien.sampling import SAMPLERS

    assert set(SAMPLER_NAMES) == set(SAMPLERS)


def test_resolve_applies_the_label_policy_and_leaves_nothing_open():
    def resolved(mix, **kw):
        return GenerationSettings(**kw).resolve(ExpressionRequest(mix=mix))

    happy, angry, fearful = resolved({"happy": 1.0}), resolved({"angry": 1.0}), resolved({"fearful": 0.5})
    assert all(v is not None for v in happy.to_dict().values())
    assert (happy.guidance_contrast, happy.recogniser_guidance, happy.blendshape_guidance) == (1.0, RECOGNISER_GUIDANCE, 0.0)
    assert (angry.guidance_contrast, angry.recogniser_guidance) == (LABEL_POLICY["angry"]["guidance_contrast"],
                                                                    RECOGNISER_GUIDANCE_WITH_CONTRAST)
    assert fearful.blendshape_guidance == LABEL_POLICY["fearful"]["blendshape_guidance"]
    # explicit values win; the recogniser default follows the contrast guidance actually used
    assert resolved({"angry": 1.0}, guidance_contrast=1.0).recogniser_guidance == RECOGNISER_GUIDANCE
    assert resolved({"happy": 1.0}, guidance_contrast=2.0).recogniser_guidance == RECOGNISER_GUIDANCE_WITH_CONTRAST
    assert resolved({"fearful": 1.0}, blendshape_guidance=0.0).blendshape_guidance == 0.0
    # sdedit takes no FlowEdit guidance, whatever the labels
    sd = resolved({"fearful": 1.0}, method="sdedit")
    assert (sd.guidance_contrast, sd.recogniser_guidance, sd.blendshape_guidance, sd.sampler) == (1.0, 0.0, 0.0, "euler")
    assert resolved({"happy": 1.0}).resolve(ExpressionRequest(mix={"angry": 1.0})) == resolved({"happy": 1.0})


def test_critic_precision_follows_the_device_unless_given():
    sad = ExpressionRequest(mix={"sad": 1.0})
    assert GenerationSettings().resolve(sad, native_bfloat16=True).critic_precision == "bfloat16"
    assert GenerationSettings().resolve(sad).critic_precision == "float32"
    assert GenerationSettings(critic_precision="float32").resolve(sad, native_bfloat16=True).critic_precision == "float32"
    from mien.threads import cpu_native_bfloat16, native_bfloat16

    assert native_bfloat16("cpu") == cpu_native_bfloat16() and not native_bfloat16("meta")


@pytest.mark.parametrize("kw, words", [
    (dict(strength=0.0), "--strength 0.0 is out of range"),
    (dict(strength=float("nan")), "--strength nan is out of range"),
    (dict(keep="hair"), "--keep hair: unknown region"),
    (dict(method="inpaint"), "--method inpaint: unknown edit method"),
    (dict(steps=0), "--steps 0 must be at least 1"),
    (dict(sampler="ddim"), "unknown sampler 'ddim'"),
    (dict(sampler="heun"), "--sampler heun works with --method sdedit"),
    (dict(guidance_until=1.0), "--guidance-until 1.0 is out of range"),
    (dict(guidance_contrast=0.5), "--guidance-contrast 0.5 is out of range"),
    (dict(recogniser_guidance=-1.0), "--recogniser-guidance -1.0 is out of range"),
    (dict(blendshape_guidance_until=0.0), "--blendshape-guidance-until 0.0 is out of range"),
    (dict(critic_precision="float16"), "--critic-precision float16: unknown number format"),
    (dict(method="sdedit", recogniser_guidance=0.3), "--recogniser-guidance works with --method flowedit"),
    (dict(method="sdedit", guidance_contrast=2.0), "--guidance-contrast works with --method flowedit"),
    (dict(method="sdedit", blendshape_guidance=1.0), "--blendshape-guidance works with --method flowedit"),
    (dict(person_rows="source"), "--person-rows source: unknown rows"),
    (dict(method="sdedit", person_rows="target"), "--person-rows target chooses among FlowEdit's rows"),
    (dict(person_scale=-0.5), "--person-scale -0.5 is out of range"),
    (dict(guidance_identity=-1.0), "--guidance-identity -1.0 is out of range"),
    (dict(guidance_expression=-0.5), "--guidance-expression -0.5 is out of range"),
    (dict(guidance_expression=float("inf")), "--guidance-expression inf is out of range"),
    # every other float setting, at a value just outside its range (nan too, which no comparison admits)
    (dict(strength=1.5), "--strength 1.5 is out of range"),
    (dict(guidance_until=-0.1), "--guidance-until -0.1 is out of range"),
    (dict(guidance_contrast=float("nan")), "--guidance-contrast nan is out of range"),
    (dict(recogniser_guidance_until=1.5), "--recogniser-guidance-until 1.5 is out of range"),
    (dict(descriptor_guidance=-0.1), "--descriptor-guidance -0.1 is out of range"),
    (dict(descriptor_guidance_until=0.0), "--descriptor-guidance-until 0.0 is out of range"),
    (dict(blendshape_guidance=-1.0), "--blendshape-guidance -1.0 is out of range"),
    (dict(variety=-0.1), "--variety -0.1 is out of range"),
    (dict(person_scale=float("nan")), "--person-scale nan is out of range"),
])
def test_bad_settings_are_one_line_errors_naming_the_flag(kw, words):
    with pytest.raises(MienError, match=None) as e:
        GenerationSettings(**kw)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_settings_are_frozen_and_explicit_off_values_are_fine_with_sdedit():
    s = GenerationSettings(method="sdedit", sampler="heun", recogniser_guidance=0.0, guidance_contrast=1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.steps = 3


@pytest.mark.parametrize("command", ["generate", "evaluate"])
def test_every_setting_is_a_flag_with_its_help(command):
    from mien.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    options = {a.dest: a for a in sub._actions}
    for f in dataclasses.fields(GenerationSettings):
        assert f.name in options, f"--{f.name.replace('_', '-')} missing from mien {command}"
        assert f.metadata["help"] in options[f.name].help
    args = sub.parse_args(["--strength", "0.5", "--guidance-contrast", "2"] + (["--identity", "x.jpg"] if command == "generate" else []))
    from mien.cli.settings_flags import settings_from_args

    assert settings_from_args(args) == GenerationSettings(strength=0.5, guidance_contrast=2.0)
