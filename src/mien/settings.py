"""Sampling defaults shared by `mien generate`, :class:`mien.pipeline.MienPipeline` and
`mien evaluate --generator built-in`, in a module that imports nothing (the CLI builds its help
from it without loading torch).

Identity guidance 4 rather than 2: the spatial reference of the shipped model is still weakly used at
2 (hair and background drift); docs/model-card.md, "Choosing the defaults", has the comparison.
"""

GENERATION_DEFAULTS = {"steps": 25, "sampler": "euler", "guidance_identity": 4.0, "guidance_expression": 3.0}
