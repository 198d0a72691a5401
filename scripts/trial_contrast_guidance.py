"""Session 8's and 9's trials of contrast guidance, as a launcher: ``mien`` with two changes, set by
environment variables, so that the figures in the model card ("Session 8", "Session 9") can be rerun.

Since session 9 the library has contrast guidance itself (``mien.builtin.edit.flowedit_velocity``,
per label, with the clip below; ``--guidance-contrast``). With ``MIEN_CG`` set, this launcher's push
replaces the library's on every request; add ``--recogniser-guidance G`` to fix the recogniser
guidance (the library's default now depends on the request's contrast guidance). Session 9's C3 is the
library itself: ``mien evaluate --benchmark .../dev-wild.yaml --recogniser-guidance 0.3``; C4 is the default.

    MIEN_CG=1.5 [MIEN_CG_EYES=1] [MIEN_CG_LO=0.5] python scripts/trial_contrast_guidance.py evaluate \\
        --benchmark src/mien/resources/benchmarks/dev-wild.yaml --generator built-in --sweep-identities 0 \\
        --recogniser-guidance 0.3 --out runs/cg15_rg03

Contrast guidance (``MIEN_CG=w``, 1 = off): FlowEdit's target velocity is pushed along the difference
between the model's predictions for the requested expression and for the photo's own, both at the
edited state, v_tar + (w - 1) [v(z_tar | target) - v(z_tar | source)], instead of classifier-free
guidance's difference to the null expression token (``--guidance-expression``). One more UNet row per
step. ``MIEN_CG_EYES=1`` gives the negative the target's 14 ``eye*`` blendshapes, so the eyes are not
amplified; ``MIEN_CG_LO=t`` guides only at flow times above t. Session 9: ``MIEN_CG_CLIP=1`` gives the
negative max(source, target) on the smile and eye-closure channels (``mouthSmile*``, ``cheekSquint*``,
``eyeBlink*``, ``eyeSquint*``), so a rise there is never amplified and a fall still is;
``MIEN_CG_SMILE_OFF=1`` drops the push on a sample whose target raises ``mouthSmile`` by more than 0.1;
``MIEN_CG_LABELS=sad,angry,fearful,disgusted`` pushes only requests whose label mix holds one of them.

Label AUs (``MIEN_LABEL_AUS="fearful:AU1=3,AU2=3,AU5=3"``, ``;`` between labels): after the target is
built, set these AUs, scaled by the label's weight and intensity (what ``LABEL_AUS`` in
``mien.expression.basic`` now does for surprised; this reruns the fearful trial).

Not library code: the pair velocity is swapped in by replacing ``mien.builtin.edit.flowedit_velocity``.
"""

import os
import sys

import torch

w = float(os.environ.get("MIEN_CG", "1"))
lo = float(os.environ.get("MIEN_CG_LO", "0"))
if w != 1:
    from mien.builtin import edit
    from mien.builtin.guidance import guided_velocity
    from mien.face.blendshape_names import BLENDSHAPE_NAMES

    EYES = [i for i, n in enumerate(BLENDSHAPE_NAMES) if n.startswith("eye")]
    # Session 9: the channels of the sunglasses hypothesis (smile and eye closure)
    RISES = [i for i, n in enumerate(BLENDSHAPE_NAMES)
             if n.startswith(("mouthSmile", "cheekSquint", "eyeBlink", "eyeSquint"))]
    SMILE = [i for i, n in enumerate(BLENDSHAPE_NAMES) if n.startswith("mouthSmile")]
    plain_velocity = edit.flowedit_velocity

    # Session 9: MIEN_CG_LABELS="sad,angry" pushes only requests whose label mix holds one of these labels
    # (the request is recorded by the blendshape_target wrapper below; the pipeline builds one target per call)
    CG_LABELS = {x for x in os.environ.get("MIEN_CG_LABELS", "").split(",") if x}
    REQUEST = {"push": True}

    import mien.expression.targets as _targets

    _plain_target = _targets.blendshape_target

    def _recording_target(req, protos, calib):
        REQUEST["push"] = not CG_LABELS or any(x > 0 and label in CG_LABELS for label, x in req.mix.items())
        return _plain_target(req, protos, calib)

    _targets.blendshape_target = _recording_target

    def flowedit_velocity(model, cond, source_expression, scales, interval=None, contrast=1.0):
        # the library's own contrast (session 9: per label, always with the clip) is replaced by this one
        if not REQUEST["push"]:
            return plain_velocity(model, cond, source_expression, scales, interval)
        neg = source_expression.clone()
        if os.environ.get("MIEN_CG_EYES"):
            neg[:, EYES] = cond["expression"][:, EYES]
        if os.environ.get("MIEN_CG_CLIP"):
            # never amplify a rise in these channels; falls are still pushed
            neg[:, RISES] = torch.maximum(source_expression[:, RISES], cond["expression"][:, RISES])
        if os.environ.get("MIEN_CG_SMILE_OFF"):
            # no push at all where the target raises the smile
            rise = (cond["expression"][:, SMILE] - source_expression[:, SMILE]).mean(1) > 0.1
            neg[rise] = cond["expression"][rise]
        three = {k: torch.cat([v, v, v]) for k, v in cond.items()}
        three["expression"] = torch.cat([source_expression, cond["expression"], neg])
        v3 = guided_velocity(model, three, scales=scales, interval=interval)
        v2 = plain_velocity(model, cond, source_expression, scales, interval)

        def velocity(x, t):
            if float(torch.as_tensor(t).reshape(-1)[0]) <= lo:
                return v2(x, t)
            b = x.shape[0] // 2
            z_src, z_tar = x[:b], x[b:]
            t3 = torch.as_tensor(t).reshape(-1)[:1].expand(3 * b)
            v_src, v_tar, v_neg = v3(torch.cat([z_src, z_tar, z_tar]), t3).chunk(3)
            return torch.cat([v_src, v_tar + (w - 1) * (v_tar - v_neg)])

        return velocity

    edit.flowedit_velocity = flowedit_velocity

spec = os.environ.get("MIEN_LABEL_AUS")
if spec:
    import mien.expression.targets as targets
    from mien.expression.aus import aus_to_blendshapes

    extra = {}
    for part in spec.split(";"):
        label, aus = part.split(":")
        extra[label] = {k: float(v) for k, v in (a.split("=") for a in aus.split(","))}
    plain = targets.blendshape_target

    def blendshape_target(req, protos, calib):
        out = plain(req, protos, calib)
        for label, x in req.mix.items():
            if label in extra:
                out = aus_to_blendshapes({k: v * x * req.intensity for k, v in extra[label].items()}, calib, out)
        return out

    targets.blendshape_target = blendshape_target

from mien.cli.main import main  # noqa: E402

sys.exit(main())
