"""Sampling defaults shared by `mien generate`, :class:`mien.pipeline.MienPipeline` and
`mien evaluate --generator built-in`, in a module that imports nothing (the CLI builds its help
from it without loading torch).

Identity guidance 6 rather than 2: the shipped model still uses its spatial reference weakly, and at 2
hair and background drift; the model card (src/mien/resources/model/README.md, "Choosing the
defaults") has the comparison.
"""

GENERATION_DEFAULTS = {"steps": 25, "sampler": "euler", "guidance_identity": 6.0, "guidance_expression": 3.0}
