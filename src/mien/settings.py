"""Sampling defaults shared by `mien generate`, :class:`mien.pipeline.MienPipeline` and
`mien evaluate --generator built-in`, in a module that imports nothing (the CLI builds its help
from it without loading torch).

Identity guidance 6 rather than 2: the shipped model still uses its spatial reference weakly, and at 2
hair and background drift; the model card (src/mien/resources/model/README.md, "Choosing the
defaults") has the comparison.

Strength 0.8 with the background kept (mien.builtin.edit): sampled from pure noise (strength 1, keep
"none") the model redraws hair, background and face shape; editing the identity photo raised London
verification from 0.725 to 0.925 with the same expression accuracy (model card, "Choosing the defaults").
"""

GENERATION_DEFAULTS = {"steps": 25, "sampler": "euler", "guidance_identity": 6.0, "guidance_expression": 3.0,
                       "strength": 0.8, "keep": "background"}
KEEP_REGIONS = ("background", "none")  # what --keep accepts (mien.builtin.edit)


def check_edit(strength: float, keep: str) -> None:
    """One-line errors for --strength and --keep (called before any model is loaded)."""
    from mien.errors import MienError

    if not 0.0 < strength <= 1.0:  # also rejects nan
        raise MienError(f"--strength {strength} is out of range; use a number above 0 and at most 1 "
                        "(1 draws from noise, lower keeps more of the identity photo)")
    if keep not in KEEP_REGIONS:
        raise MienError(f"--keep {keep}: unknown region; choose one of {', '.join(KEEP_REGIONS)}")
