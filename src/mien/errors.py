"""User-facing errors.

Anything a user can cause (a bad photo, a missing weight file, an unknown expression term) raises
:class:`MienError` with a message that says what was wrong and what to do. The CLI prints that
message on one line and exits non-zero; it never shows a traceback for these.
"""


class MienError(Exception):
    """An error caused by input or environment, with a one-line message meant for the user."""

    exit_code = 2


class WeightsError(MienError):
    """A pretrained file is missing, corrupt, or cannot be fetched."""

    exit_code = 3


class NoFaceError(MienError):
    """A photo was read but no usable face was found in it."""


class FaceTooSmallError(NoFaceError):
    """A face was found but is too small to edit (mien.pipeline.MIN_FACE_PX)."""
