"""Session 8's trials that were measured and not kept, as a launcher: ``mien`` with two changes, set by
environment variables, so that the figures in the model card ("Session 8") can be rerun.

    MIEN_CG=1.5 [MIEN_CG_EYES=1] [MIEN_CG_LO=0.5] python scripts/trial_contrast_guidance.py evaluate \\
        --benchmark src/mien/resources/benchmarks/dev-wild.yaml --generator built-in --sweep-identities 0 \\
        --recogniser-guidance 0.3 --out runs/cg15_rg03

Contrast guidance (``MIEN_CG=w``, 1 = off): FlowEdit's target velocity is pushed along the difference
between the model's predictions for the requested expression and for the photo's own, both at the
edited state, v_tar + (w - 1) [v(z_tar | target) - v(z_tar | source)], instead of classifier-free
guidance's difference to the null expression token (``--guidance-expression``). One more UNet row per
step. ``MIEN_CG_EYES=1`` gives the negative the target's 14 ``eye*`` blendshapes, so the eyes are not
amplified; ``MIEN_CG_LO=t`` guides only at flow times above t.

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
    plain_velocity = edit.flowedit_velocity

    def flowedit_velocity(model, cond, source_expression, scales, interval=None):
        neg = source_expression.clone()
        if os.environ.get("MIEN_CG_EYES"):
            neg[:, EYES] = cond["expression"][:, EYES]
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
