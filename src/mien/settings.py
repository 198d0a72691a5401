"""Sampling defaults shared by `mien generate`, :class:`mien.pipeline.MienPipeline` and
`mien evaluate --generator built-in`, in a module that imports nothing (the CLI builds its help
from it without loading torch).

The default edit is FlowEdit over the whole schedule (method "flowedit", strength 1) with the background
kept and no guidance (both scales 1: the plain conditional prediction, one UNet pass per step for the
source and target together). FlowEdit moves the identity photo by the difference between the model's
predictions for the requested expression and for the photo's own, so what they agree on stays the
photo's. Chosen on the in-the-wild dev people (benchmarks/dev-wild.yaml) as the setting that keeps the
most identity among those that still move the expression clearly (change from the identity photo
>= 1.2) and make every label readable to the blendshape classifier at >= 0.8 of its real-photo
rate: CFP verification 0.70 against 0.59 for session 3's default (sdedit, strength 0.8, guidance 6
and 3), which is `--method sdedit --strength 0.8 --guidance-identity 6 --guidance-expression 3`.
Stronger expression guidance reads better to face-api and costs identity. The model card
(src/mien/resources/model/README.md, "Choosing the defaults") has every run.

Since session 7 the FlowEdit also takes recogniser guidance (mien.builtin.recogniser_guidance): at flow
times t <= 0.3 the face moves a little toward the identity photos' MobileFaceNet embedding each step,
which raised dev-wild CFP verification from 0.73 to 0.95 at the cost of some expression (model card,
"Recogniser guidance"). sdedit does not take it (asking for it with sdedit is an error).

Since session 9 the requests the model under-draws (sad, angry, fearful, disgusted) take contrast
guidance (mien.builtin.edit.flowedit_velocity: the target pushed away from the photo's own expression
by 1.5) and, to pay back the identity it costs, recogniser guidance 0.3 (model card, "Session 9").

Since session 10 fearful requests also take blendshape guidance (mien.builtin.blendshape_guidance: late
steps toward the request's blendshapes as MediaPipe reads the decoded face), at 1 (model card, "Session 10").
"""

GENERATION_DEFAULTS = {"steps": 25, "sampler": "euler", "guidance_identity": 1.0, "guidance_expression": 1.0,
                       "strength": 1.0, "keep": "background", "method": "flowedit", "guidance_until": 0.0,
                       "recogniser_guidance": 0.15, "recogniser_guidance_until": 0.3,
                       # with contrast guidance on (its default is per label: mien.expression.basic.LABEL_CONTRAST),
                       # recogniser guidance is 0.3: the push costs identity, which this pays back (session 9)
                       "guidance_contrast": None, "recogniser_guidance_contrast": 0.3,
                       # None: per label (mien.expression.basic.LABEL_BLENDSHAPE: fearful 1, session 10)
                       "blendshape_guidance": None, "blendshape_guidance_until": 0.3}
EDIT_METHODS = ("flowedit", "sdedit")  # what --method accepts (mien.builtin.edit, mien.sampling.flowedit)
KEEP_REGIONS = ("background", "none")  # what --keep accepts (mien.builtin.edit)


def contrast_for(method: str, value: float | None, mix: dict[str, float]) -> float:
    """The contrast guidance a request uses: ``value`` when given, else its labels' (flowedit only; 1 = off)."""
    from mien.expression.basic import LABEL_CONTRAST

    return _per_label(method, value, mix, LABEL_CONTRAST, off=1.0)


def blendshape_guidance_for(method: str, value: float | None, mix: dict[str, float]) -> float:
    """The blendshape guidance a request uses: ``value`` when given, else its labels' (flowedit only; 0 = off;
    asking for it with sdedit is a one-line error in :func:`check_edit`)."""
    from mien.expression.basic import LABEL_BLENDSHAPE

    return _per_label(method, value, mix, LABEL_BLENDSHAPE, off=0.0)


def _per_label(method: str, value: float | None, mix: dict[str, float], table: dict[str, float], off: float) -> float:
    """A FlowEdit setting whose default depends on the request's labels: ``value`` when given, else
    ``table``'s (:func:`mien.expression.basic.label_scale`); ``off`` for other methods."""
    if value is not None:
        return value
    if method != "flowedit":
        return off
    from mien.expression.basic import label_scale

    return label_scale(table, mix, off)


def recogniser_guidance_for(method: str, value: float | None, contrast: float = 1.0) -> float:
    """The recogniser guidance a run uses: ``value`` when given, else the default for ``method`` and the
    request's contrast guidance (it is a FlowEdit hook, so 0 for sdedit; asking for it with sdedit is a
    one-line error)."""
    if value is not None:
        if value > 0 and method != "flowedit":
            from mien.errors import MienError

            raise MienError(f"--recogniser-guidance works with --method flowedit; drop it (or pass 0) with "
                            f"--method {method}")
        return value
    if method != "flowedit":
        return 0.0
    return GENERATION_DEFAULTS["recogniser_guidance_contrast" if contrast > 1.0 else "recogniser_guidance"]


def check_edit(strength: float, keep: str, method: str = GENERATION_DEFAULTS["method"],
               guidance_until: float = GENERATION_DEFAULTS["guidance_until"],
               recogniser_guidance: float | None = GENERATION_DEFAULTS["recogniser_guidance"],
               recogniser_guidance_until: float = GENERATION_DEFAULTS["recogniser_guidance_until"],
               guidance_contrast: float | None = None,
               blendshape_guidance: float | None = GENERATION_DEFAULTS["blendshape_guidance"],
               blendshape_guidance_until: float = GENERATION_DEFAULTS["blendshape_guidance_until"]) -> None:
    """One-line errors for --strength, --keep, --method, --guidance-until, the recogniser guidance,
    --guidance-contrast and the blendshape guidance (before any model is loaded)."""
    from mien.errors import MienError

    if not 0.0 < strength <= 1.0:  # also rejects nan
        raise MienError(f"--strength {strength} is out of range; use a number above 0 and at most 1 "
                        "(1 edits over the whole schedule, lower keeps more of the identity photo)")
    if keep not in KEEP_REGIONS:
        raise MienError(f"--keep {keep}: unknown region; choose one of {', '.join(KEEP_REGIONS)}")
    if method not in EDIT_METHODS:
        raise MienError(f"--method {method}: unknown edit method; choose one of {', '.join(EDIT_METHODS)}")
    if not 0.0 <= guidance_until < 1.0:
        raise MienError(f"--guidance-until {guidance_until} is out of range; use a flow time from 0 (guide at every "
                        "step) up to but not including 1")
    if recogniser_guidance is not None and not 0.0 <= recogniser_guidance <= 10.0:
        raise MienError(f"--recogniser-guidance {recogniser_guidance} is out of range; use 0 (off) to 10 (the default "
                        f"{GENERATION_DEFAULTS['recogniser_guidance']:g} keeps identity; larger undoes the expression)")
    if guidance_contrast is not None:
        if not 1.0 <= guidance_contrast <= 10.0:  # also rejects nan
            raise MienError(f"--guidance-contrast {guidance_contrast} is out of range; use 1 (off) to 10 (leave it out "
                            "for the per-label default: 1.5 on sad, angry, fearful and disgusted)")
        if guidance_contrast != 1.0 and method != "flowedit":
            raise MienError(f"--guidance-contrast works with --method flowedit; drop it with --method {method}")
    if not 0.0 < recogniser_guidance_until <= 1.0:
        raise MienError(f"--recogniser-guidance-until {recogniser_guidance_until} is out of range; use a flow time "
                        "above 0 and at most 1 (1 guides at every step)")
    if blendshape_guidance is not None and not 0.0 <= blendshape_guidance <= 10.0:  # also rejects nan
        raise MienError(f"--blendshape-guidance {blendshape_guidance} is out of range; use 0 (off) to 10 (leave it "
                        "out for the per-label default: 1 on fearful)")
    if blendshape_guidance is not None and blendshape_guidance > 0 and method != "flowedit":
        raise MienError(f"--blendshape-guidance works with --method flowedit; drop it with --method {method}")
    if not 0.0 < blendshape_guidance_until <= 1.0:
        raise MienError(f"--blendshape-guidance-until {blendshape_guidance_until} is out of range; use a flow time "
                        "above 0 and at most 1 (1 guides at every step)")
