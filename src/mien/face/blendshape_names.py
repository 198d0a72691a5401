"""The names of MediaPipe's 52 face blendshapes, in the order of the model's outputs.

Kept apart from :mod:`mien.models.blendshapes` (the network, which needs torch) so that code that only
needs the names (the expression space, `mien expressions`) starts without importing torch.
``mien.models.blendshapes.BLENDSHAPE_NAMES`` re-exports this tuple.
"""

# kBlendshapeNames in google-ai-edge/mediapipe mediapipe/tasks/cc/vision/face_landmarker/
# face_blendshapes_graph.cc (commit 97fe07c4); the order of the model's 52 outputs.
BLENDSHAPE_NAMES: tuple[str, ...] = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft",
    "browOuterUpRight", "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft",
    "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight",
    "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft",
    "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen",
    "jawRight", "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft",
    "mouthFrownRight", "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight",
    "mouthPressLeft", "mouthPressRight", "mouthPucker", "mouthRight", "mouthRollLower",
    "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight",
    "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "noseSneerLeft", "noseSneerRight",
)  # fmt: skip

__all__ = ["BLENDSHAPE_NAMES"]
