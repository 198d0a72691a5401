"""Every generation setting once: :class:`GenerationSettings`, its defaults, help, validation and the
per-label policy, in a module that imports nothing heavy (the CLI builds its flags and help from it
without loading torch).

The default edit is FlowEdit over the whole schedule (method "flowedit", strength 1) with the background
kept and the plain conditional prediction (both classifier-free scales 1: one UNet pass per step for the
source and target together). FlowEdit moves the identity photo by the difference between the model's
predictions for the requested expression and for the photo's own, so what they agree on stays the
photo's. Late in the edit it steps the face toward the identity photos' MobileFaceNet embedding
(recogniser guidance, :mod:`mien.guidance.recogniser`), read by the shipped latent reader on the early guided
steps and by MobileFaceNet on the decoded face on the last two (``recogniser_critic`` "hybrid": a third of the
decoded face's time, docs/performance.md, "A hybrid critic"; a swap decodes every guided step), the decode in bfloat16 where the device computes in
it natively (``critic_precision``: less time, the same quality on the tuning people, docs/performance.md). ``--method
sdedit --strength 0.8 --guidance-identity 6 --guidance-expression 3`` re-noises and redraws the face instead.
The model card (src/mien/resources/model/README.md) has the measurements behind each default.

A setting left at ``None`` takes its per-request default: :meth:`GenerationSettings.resolve` applies
:data:`LABEL_POLICY` (the labels the model under-draws take contrast guidance, fearful also blendshape
guidance) and the method's own defaults, and returns settings with every value concrete, which the
output metadata records. A swap (``mien generate --into``) resolves the settings left at ``None`` to
:data:`SWAP_DEFAULTS` where it has its own (identity classifier-free guidance 3, contrast guidance at least
1.5 but on happy, docs/swap.md).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

EDIT_METHODS = ("flowedit", "sdedit")  # mien.editing, mien.sampling.flowedit
KEEP_REGIONS = ("background", "none")  # mien.regions
# mien.sampling.samplers.SAMPLERS (importing it here would load torch; tests/test_settings.py checks they agree)
SAMPLER_NAMES = ("euler", "heun", "midpoint", "dpmpp_2m")

# Per-label defaults of the label-dependent settings (FlowEdit only). A request takes, per setting, the
# largest value among the labels it asks for with intensity > 0; a setting a label does not list is off.
# - guidance_contrast 1.5 (mien.guidance.contrast) on the labels the model under-draws: the FlowEdit
#   target is pushed away from the photo's own expression. Not happy (on smiling photos the push drew
#   sunglasses on some in-the-wild faces), not surprised (reads well without).
# - blendshape_guidance 1 (mien.guidance.blendshape) on fearful, which face-api read at 0.41 of its
#   real rate without it and 0.94 with it over the dev benchmark's 172 fearful requests (verification
#   0.983 -> 0.981); on other labels it cost face-api readings (disgusted 0.99 -> 0.66 on dev-wild).
LABEL_POLICY: dict[str, dict[str, float]] = {
    "sad": {"guidance_contrast": 1.5},
    "angry": {"guidance_contrast": 1.5},
    "fearful": {"guidance_contrast": 1.5, "blendshape_guidance": 1.0},
    "disgusted": {"guidance_contrast": 1.5},
}
# Recogniser guidance left at None (FlowEdit): 0.15, and 0.3 while contrast guidance is on, whose push
# costs identity that the larger pull pays back (docs/history/model-card-defaults.md).
RECOGNISER_GUIDANCE = 0.15
RECOGNISER_GUIDANCE_WITH_CONTRAST = 0.3
# A swap's defaults (mien generate --into, Editor.swap) of the settings left at None, FlowEdit only: chosen on
# the swap benchmark's tuning pairs (docs/swap.md).
# guidance_contrast: the least contrast guidance of a swap, on every request that does not ask for happy (the label
# policy's larger values still apply): in a swap it is the gain of the expression part of the move alone
# (mien.guidance.contrast). Not on happy, for the reason LABEL_POLICY gives: on the tuning pairs it drew sunglasses.
# recogniser_critic: the decoded face on every guided step, since on the swap tuning pairs the hybrid critic verified
# fewer swaps as the selfie's person (29 against 32 of 42; docs/performance.md, "The report split in full, and the
# default").
SWAP_DEFAULTS: dict[str, float | str] = {"guidance_identity": 3.0, "descriptor_guidance": 0.0,
                                         "guidance_contrast": 1.5, "swap_reference": "identity",
                                         "recogniser_critic": "decoded"}
# The number formats of critic guidance's decode and backward pass (mien.guidance.gradient.GradientGuide).
CRITIC_PRECISIONS = ("float32", "bfloat16")
# What colour hold takes out of FlowEdit's state (mien.guidance.colour_hold).
COLOUR_HOLD_BASES = ("latent", "colour")
# What recogniser guidance scores (mien.guidance.recogniser): the TAEF2-decoded face read by MobileFaceNet, or
# mien's latent reader distilled from it (mien.models.latent_reader; docs/performance.md, "A latent critic"), or
# the reader on the early guided steps and the decoded face on the last recogniser_decoded_steps ("hybrid", an
# edit's default: docs/performance.md, "A hybrid critic")
RECOGNISER_CRITICS = ("decoded", "latent", "hybrid")
RECOGNISER_CRITIC = "hybrid"  # an edit's default (a swap's: SWAP_DEFAULTS)
# What blendshape guidance reads the face with (mien.guidance.blendshape): the TAEF2-decoded face read by MediaPipe's
# nets, mien's blendshape reader distilled from it (mien.models.latent_reader, kind "blendshape"), or the reader on
# the early guided steps and the decoded face on the last blendshape_decoded_steps (docs/performance.md, "A
# blendshape reader")
BLENDSHAPE_CRITICS = ("decoded", "latent", "hybrid")
BLENDSHAPE_CRITIC = "decoded"  # the default of edits and swaps
# What a swap's target rows take as the spatial reference (mien.pipeline, docs/swap.md).
SWAP_REFERENCES = ("identity", "none", "scene")
# Which rows of FlowEdit's pair take a loaded person's LoRA (mien.pipeline, docs/personalize.md).
PERSON_ROWS = ("both", "target")
# What each label-dependent setting is when no label asks for it (and always with sdedit).
_OFF = {"guidance_contrast": 1.0, "blendshape_guidance": 0.0}


def _policy_help(name: str) -> str:
    """'1.5 for sad, angry, ...' : the LABEL_POLICY values of a setting, for its help text."""
    by_value: dict[float, list[str]] = {}
    for label, values in LABEL_POLICY.items():
        if name in values:
            by_value.setdefault(values[name], []).append(label)
    return "; ".join(f"{v:g} for {', '.join(labels)}" for v, labels in by_value.items())


def setting(default: Any, help: str, metavar: str | None = None) -> Any:
    """A settings field whose help text is its documentation (peft's config style): the CLI shows it."""
    return field(default=default, metadata={"help": help, "metavar": metavar})


@dataclass(frozen=True)
class GenerationSettings:
    """How the built-in model edits a photo toward a request. ``None`` = the request's default
    (:meth:`resolve`). Invalid values raise a one-line :class:`mien.errors.MienError` naming the flag."""

    method: str = setting("flowedit", "how the identity photo is edited: 'flowedit' moves it by the difference "
                          "between the requested expression and its own, 'sdedit' re-noises it and redraws",
                          "|".join(EDIT_METHODS))
    steps: int = setting(25, "sampler steps")
    sampler: str | None = setting(None, "the ODE sampler of --method sdedit: " + ", ".join(SAMPLER_NAMES)
                                  + " (default euler); flowedit steps with Euler and refuses another", "NAME")
    strength: float = setting(1.0, "how early in the noise schedule the edit starts: 1 is the whole schedule (with "
                              "sdedit: drawn from noise), lower keeps more of the identity photo", "S")
    keep: str = setting("background", "'background' keeps the identity photo outside the face (hair, clothes, "
                        "background); 'none' redraws everything", "|".join(KEEP_REGIONS))
    guidance_identity: float | None = setting(
        None, "identity classifier-free guidance scale, 0 or more (higher keeps more of the identity photo; in a "
        "swap, moves the face further to the --identity person) (default 1; "
        f"{SWAP_DEFAULTS['guidance_identity']:g} for swaps, --into)", "G")
    guidance_expression: float = setting(1.0, "expression classifier-free guidance scale, 0 or more (higher pushes "
                                         "the requested expression harder)", "G")
    swap_reference: str | None = setting(
        None, "a swap's (--into) spatial reference in the target rows: 'identity' the --identity photo's latent, "
        "'none' zeros (the model's 'no other photo'), 'scene' the scene face's latent (default "
        f"{SWAP_DEFAULTS['swap_reference']}; only with --into)", "|".join(SWAP_REFERENCES))
    guidance_until: float = setting(0.0, "classifier-free guidance only while the flow time is above T (it runs "
                                    "from --strength down to 0), then the plain conditional prediction: strong "
                                    "guidance late in sampling distorts fine detail (0 guides at every step)", "T")
    guidance_contrast: float | None = setting(None, "flowedit: push the requested expression away from the photo's "
                                              "own by W (1 is off); default per label: "
                                              + _policy_help("guidance_contrast") + ", which the model under-draws; "
                                              f"1 otherwise; at least {SWAP_DEFAULTS['guidance_contrast']:g} in a swap "
                                              "(--into) unless it asks for happy", "W")
    recogniser_guidance: float | None = setting(
        None, f"flowedit: late in the edit, step the face toward the identity photos' MobileFaceNet embedding with "
        f"this strength; keeps who they are, larger also undoes the expression (default {RECOGNISER_GUIDANCE:g}, "
        f"{RECOGNISER_GUIDANCE_WITH_CONTRAST:g} with contrast guidance on; 0 turns it off)", "G")
    recogniser_guidance_until: float = setting(0.3, "recogniser guidance acts while the flow time is at most T "
                                               "(1 acts at every step)", "T")
    descriptor_guidance: float | None = setting(
        None, "flowedit: step the face toward the identity photos' face-api descriptor (the identity condition) with "
        "this strength, while the flow time is at most --descriptor-guidance-until; moves a swap's face to the "
        f"--identity person (default 0, off, for edits; {SWAP_DEFAULTS['descriptor_guidance']:g} for swaps, --into)",
        "G")
    descriptor_guidance_until: float = setting(1.0, "descriptor guidance acts while the flow time is at most T (1 "
                                               "acts at every step)", "T")
    blendshape_guidance: float | None = setting(None, "flowedit: late in the edit, step the face toward the requested "
                                                "blendshapes as MediaPipe reads them (stronger, more exact "
                                                "expressions; slower) with this strength; default per label: "
                                                + _policy_help("blendshape_guidance") + ", which the model draws as "
                                                "a grimace otherwise; 0 (off) for the rest", "G")
    blendshape_guidance_until: float = setting(0.3, "blendshape guidance acts while the flow time is at most T "
                                               "(1 acts at every step)", "T")
    blendshape_critic: str | None = setting(
        None, "what blendshape guidance reads the face with: 'decoded', MediaPipe's nets on the TAEF2-decoded face at "
        "every guided step; 'hybrid', mien's blendshape reader (a small net shipped with the model, distilled from "
        "the decoded critic, that reads the latent without decoding) on the early guided steps and the decoded face "
        "on the last --blendshape-decoded-steps (less time); 'latent', the reader on every step (least time) "
        f"(default {BLENDSHAPE_CRITIC}; docs/performance.md, \"A blendshape reader\")", "|".join(BLENDSHAPE_CRITICS))
    blendshape_decoded_steps: int = setting(
        2, "with --blendshape-critic hybrid: how many of the last blendshape-guided steps the decoded face reads (0: "
        "the blendshape reader reads every step, as 'latent'; the number of guided steps or more: every step, as "
        "'decoded'); ignored by the other critics", "N")
    colour_hold: float = setting(0.0, "flowedit: after each step, take this share of the face's colour change out "
                                 "of the edit (the median per latent channel over the cells it redraws), so the skin "
                                 "keeps more of the photo's colour (0, the default, is off: on the tuning people it "
                                 "also changes what the model draws and costs expressions; docs/fullres.md)", "S")
    colour_hold_until: float = setting(1.0, "colour hold acts while the flow time is at most T (1 acts at every step)",
                                       "T")
    colour_hold_basis: str = setting("latent", "what colour hold takes out: 'latent' the whole per-channel offset, "
                                     "'colour' only its part that shifts the decoded face's mean colour",
                                     "|".join(COLOUR_HOLD_BASES))
    critic_precision: str | None = setting(
        None, "the number format of recogniser, blendshape and descriptor guidance's decode and backward pass: "
        "'bfloat16' takes half the time where the device computes in it natively (GPUs, CPUs with AVX512-BF16 or "
        "AMX) and reads as float32 does on the tuning people; elsewhere it is emulated and slower (default: bfloat16 "
        "where native, else float32)",
        "|".join(CRITIC_PRECISIONS))
    recogniser_critic: str | None = setting(
        None, "what recogniser guidance scores: 'hybrid', mien's latent reader (a small net shipped with the "
        "model, distilled from the decoded critic, that reads the latent without decoding) on the early guided steps "
        "and MobileFaceNet's embedding of the TAEF2-decoded face on the last --recogniser-decoded-steps, where the "
        "person's detail settles: a third of the decoded critic's guidance time, verifying within 0.02 of it on the "
        "tuning and report people (docs/performance.md, \"A hybrid critic\"); 'decoded', the decoded face on every "
        "guided step; 'latent', the reader on every step (least time, less of the person) (default "
        f"{RECOGNISER_CRITIC}; {SWAP_DEFAULTS['recogniser_critic']} for swaps, --into)",
        "|".join(RECOGNISER_CRITICS))
    recogniser_decoded_steps: int = setting(
        2, "with --recogniser-critic hybrid: how many of the last recogniser-guided steps the decoded face scores (0: "
        "the latent reader scores every step, as 'latent'; the number of guided steps or more: every step, as "
        "'decoded'); ignored by the other critics", "N")
    variety: float = setting(0.0, "how much each seed's expression varies around the request, 0 to 1: each image's "
                             "blendshape target is the request's change from neutral scaled by a seeded factor "
                             "around 1, plus seeded jitter on the blendshapes it moves (0: every seed asks for "
                             "exactly the request, and images differ in fine detail only)", "V")
    person_rows: str = setting("both", "with a person's LoRA (--person), flowedit: the rows of FlowEdit's pair that take "
                               "it: 'both', or 'target', the requested expression's rows only, so the photo's own "
                               "rows take the base model and what the LoRA learned of how the person looks is not "
                               "subtracted by the edit (docs/personalize.md)", "|".join(PERSON_ROWS))
    person_scale: float = setting(1.0, "with a person's LoRA (--person): its scale on the rows that take it (0 is "
                                  "tuning-free, above 1 extrapolates the person's change to the base model)", "S")

    def __post_init__(self):
        from mien.errors import MienError

        def bad(name: str, value, what: str) -> MienError:
            return MienError(f"--{name.replace('_', '-')} {value} {what}")

        if self.method not in EDIT_METHODS:
            raise MienError(f"--method {self.method}: unknown edit method; choose one of {', '.join(EDIT_METHODS)}")
        if self.keep not in KEEP_REGIONS:
            raise MienError(f"--keep {self.keep}: unknown region; choose one of {', '.join(KEEP_REGIONS)}")
        if self.sampler is not None and self.sampler not in SAMPLER_NAMES:
            raise MienError(f"unknown sampler '{self.sampler}'; choose one of {', '.join(sorted(SAMPLER_NAMES))}")
        if self.method == "flowedit" and self.sampler not in (None, "euler"):
            raise MienError(f"--sampler {self.sampler} works with --method sdedit; flowedit steps with Euler (drop "
                            "--sampler, or add --method sdedit)")
        if not isinstance(self.steps, numbers.Integral) or self.steps < 1:
            raise bad("steps", self.steps, "must be at least 1")
        if not 0.0 < self.strength <= 1.0:  # every range check here also rejects nan
            raise bad("strength", self.strength, "is out of range; use a number above 0 and at most 1 (1 edits over "
                      "the whole schedule, lower keeps more of the identity photo)")
        for name in ("guidance_identity", "guidance_expression"):  # 0 is the stream's unconditional prediction
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0.0):
                raise bad(name, value, "is out of range; use a guidance scale of 0 (the condition ignored) or more, "
                          "such as 1 (plain) or 3")
        if self.swap_reference is not None and self.swap_reference not in SWAP_REFERENCES:
            raise MienError(f"--swap-reference {self.swap_reference}: unknown reference; choose one of "
                            f"{', '.join(SWAP_REFERENCES)}")
        if not 0.0 <= self.guidance_until < 1.0:
            raise bad("guidance_until", self.guidance_until, "is out of range; use a flow time from 0 (guide at every "
                      "step) up to but not including 1")
        if self.guidance_contrast is not None and not 1.0 <= self.guidance_contrast <= 10.0:
            raise bad("guidance_contrast", self.guidance_contrast, "is out of range; use 1 (off) to 10 (leave it out "
                      "for the per-label default: " + _policy_help("guidance_contrast") + ")")
        if self.recogniser_guidance is not None and not 0.0 <= self.recogniser_guidance <= 10.0:
            raise bad("recogniser_guidance", self.recogniser_guidance, f"is out of range; use 0 (off) to 10 (the "
                      f"default {RECOGNISER_GUIDANCE:g} keeps identity; larger undoes the expression)")
        if self.blendshape_guidance is not None and not 0.0 <= self.blendshape_guidance <= 10.0:
            raise bad("blendshape_guidance", self.blendshape_guidance, "is out of range; use 0 (off) to 10 (leave "
                      "it out for the per-label default: " + _policy_help("blendshape_guidance") + ")")
        if self.descriptor_guidance is not None and not 0.0 <= self.descriptor_guidance <= 10.0:
            raise bad("descriptor_guidance", self.descriptor_guidance, "is out of range; use 0 (off) to 10")
        for name in ("recogniser_guidance_until", "blendshape_guidance_until", "descriptor_guidance_until",
                     "colour_hold_until"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise bad(name, getattr(self, name), "is out of range; use a flow time above 0 and at most 1 (1 "
                          "guides at every step)")
        if not 0.0 <= self.colour_hold <= 1.0:
            raise bad("colour_hold", self.colour_hold, "is out of range; use 0 (off) to 1 (all of the colour change)")
        if self.colour_hold_basis not in COLOUR_HOLD_BASES:
            raise MienError(f"--colour-hold-basis {self.colour_hold_basis}: unknown basis; choose one of "
                            f"{', '.join(COLOUR_HOLD_BASES)}")
        if self.critic_precision is not None and self.critic_precision not in CRITIC_PRECISIONS:
            raise MienError(f"--critic-precision {self.critic_precision}: unknown number format; choose one of "
                            f"{', '.join(CRITIC_PRECISIONS)}")
        for kind, critics in (("recogniser", RECOGNISER_CRITICS), ("blendshape", BLENDSHAPE_CRITICS)):
            critic, steps = getattr(self, f"{kind}_critic"), getattr(self, f"{kind}_decoded_steps")
            if critic is not None and critic not in critics:
                raise MienError(f"--{kind}-critic {critic}: unknown critic; choose one of {', '.join(critics)}")
            if not isinstance(steps, numbers.Integral) or steps < 0:
                raise bad(f"{kind}_decoded_steps", steps, "is out of range; use a whole number of guided steps, 0 or "
                          "more")
        if self.person_rows not in PERSON_ROWS:
            raise MienError(f"--person-rows {self.person_rows}: unknown rows; choose one of {', '.join(PERSON_ROWS)}")
        if self.method != "flowedit" and self.person_rows != "both":
            raise MienError(f"--person-rows {self.person_rows} chooses among FlowEdit's rows; drop it with --method "
                            f"{self.method}")
        if not 0.0 <= self.person_scale <= 4.0:
            raise bad("person_scale", self.person_scale, "is out of range; use 0 (tuning-free) to 4 (1 is the LoRA as "
                      "trained)")
        if not 0.0 <= self.variety <= 1.0:
            raise bad("variety", self.variety, "is out of range; use 0 (every seed the same request) to 1")
        if self.method != "flowedit":  # FlowEdit hooks: asked for explicitly with another method, an error
            for name, off in (("guidance_contrast", 1.0), ("recogniser_guidance", 0.0), ("blendshape_guidance", 0.0),
                              ("descriptor_guidance", 0.0), ("colour_hold", 0.0)):
                if getattr(self, name) not in (None, off):
                    raise MienError(f"--{name.replace('_', '-')} works with --method flowedit; drop it with "
                                    f"--method {self.method}")

    def resolve(self, request, swap: bool = False, native_bfloat16: bool = False) -> "GenerationSettings":
        """These settings for ``request`` (anything with a ``mix`` {label: intensity}), every ``None`` replaced:
        the labels' :data:`LABEL_POLICY`, the method's defaults, for a swap (``swap``) :data:`SWAP_DEFAULTS`, and
        ``critic_precision`` by whether the device computes in bfloat16 natively (``native_bfloat16``,
        :func:`mien.threads.native_bfloat16`)."""
        flowedit = self.method == "flowedit"
        mix = getattr(request, "mix", {}) or {}

        def per_label(name: str) -> float:
            value = getattr(self, name)
            if value is not None:
                return value
            if not flowedit:
                return _OFF[name]
            return label_value(mix, name)

        contrast = per_label("guidance_contrast")
        if swap and flowedit and self.guidance_contrast is None and not mix.get("happy", 0) > 0:  # SWAP_DEFAULTS
            contrast = max(contrast, SWAP_DEFAULTS["guidance_contrast"])
        recogniser = self.recogniser_guidance
        if recogniser is None:
            recogniser = 0.0 if not flowedit else (
                RECOGNISER_GUIDANCE_WITH_CONTRAST if contrast > 1.0 else RECOGNISER_GUIDANCE)
        def swap_default(name: str, off):  # a swap's own default (FlowEdit), else ``off``
            value = getattr(self, name)
            return value if value is not None else SWAP_DEFAULTS[name] if swap and flowedit else off

        return dataclasses.replace(self, sampler=self.sampler or "euler", guidance_contrast=contrast,
                                   recogniser_guidance=recogniser, blendshape_guidance=per_label("blendshape_guidance"),
                                   guidance_identity=swap_default("guidance_identity", 1.0),
                                   descriptor_guidance=swap_default("descriptor_guidance", 0.0),
                                   swap_reference=swap_default("swap_reference", SWAP_REFERENCES[0]),
                                   recogniser_critic=swap_default("recogniser_critic", RECOGNISER_CRITIC),
                                   blendshape_critic=self.blendshape_critic or BLENDSHAPE_CRITIC,
                                   critic_precision=self.critic_precision
                                   or CRITIC_PRECISIONS[1 if native_bfloat16 else 0])  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def fields(cls) -> tuple[dataclasses.Field, ...]:
        return dataclasses.fields(cls)


def label_value(mix: dict[str, float], name: str) -> float:
    """The per-label default of setting ``name`` for a label mix: the largest :data:`LABEL_POLICY` value among
    the labels asked for with intensity > 0, else the setting's "off" value."""
    return max((LABEL_POLICY[label][name] for label, x in mix.items()
                if x > 0 and name in LABEL_POLICY.get(label, {})), default=_OFF[name])  # fmt: skip
