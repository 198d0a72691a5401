"""Guidance: every way the sampling is steered beyond the plain conditional prediction.

One module per kind, each a :class:`Guidance` (base.py: the interface and :class:`GuidanceContext`),
applied in registry order:

classifier_free.py  per-stream classifier-free guidance (identity, expression scales; guidance interval)
contrast.py         FlowEdit target pushed away from the photo's own expression (under-drawn labels)
blendshape.py       late FlowEdit steps toward the requested blendshapes as MediaPipe reads the face
recogniser.py       late FlowEdit steps toward the person's MobileFaceNet embedding
descriptor.py       FlowEdit steps toward the person's face-api descriptor (a swap's identity)
gradient.py         the critic step blendshape and recogniser guidance share
colour_hold.py      FlowEdit's state held at the photo's skin colour over the redrawn face (off by default)

A new kind is one module with a :class:`Guidance` subclass and one :func:`register` line.
"""

from mien.guidance.base import Correction, ExpressionVelocity, Guidance, GuidanceContext, PairVelocity, chain
from mien.guidance.blendshape import BlendshapeGuidance
from mien.guidance.classifier_free import ClassifierFreeGuidance
from mien.guidance.colour_hold import ColourHold
from mien.guidance.contrast import ContrastGuidance
from mien.guidance.descriptor import DescriptorGuidance
from mien.guidance.recogniser import RecogniserGuidance

GUIDANCE: dict[str, Guidance] = {}


def register(kind: Guidance) -> Guidance:
    """Apply ``kind`` to every generation from now on (after the kinds registered before it)."""
    if not kind.name:
        raise ValueError(f"{type(kind).__name__} needs a name")
    GUIDANCE[kind.name] = kind
    return kind


register(ClassifierFreeGuidance())
register(ContrastGuidance())
register(BlendshapeGuidance())  # corrections apply in this order: blendshapes, then identity
register(RecogniserGuidance())
register(DescriptorGuidance())
register(ColourHold())  # last: the state each step ends with holds the photo's colour

__all__ = ["GUIDANCE", "Correction", "ExpressionVelocity", "Guidance", "GuidanceContext", "PairVelocity", "chain",
           "register"]  # fmt: skip
