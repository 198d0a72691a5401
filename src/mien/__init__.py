"""mien: personalised facial expression generation.

One or a few photos of a person in; that person with the requested expression out.
See the README for the command line and :mod:`mien.analysis` for the face analysis stack.
"""

__version__ = "0.1.0"
