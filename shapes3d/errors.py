"""One exception hierarchy for the whole suite.

Every error a user can cause derives from :class:`Shapes3DError`. Errors about a
file derive from :class:`InputFileError`, carry the offending ``path`` and put it
first in the message, so a batch job can report "file: what is wrong" verbatim.
"""

from __future__ import annotations

import os


class Shapes3DError(Exception):
    """Base class of every error shapes3d raises on purpose."""


class ConfigError(Shapes3DError):
    """A configuration file or override is invalid (unknown key, wrong type, bad value)."""


class InputFileError(Shapes3DError):
    """Something is wrong with an input file; ``path`` names it."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class MissingFileError(InputFileError, FileNotFoundError):
    """The file does not exist."""

    def __init__(self, path: str | os.PathLike, problem: str = "file does not exist") -> None:
        super().__init__(path, problem)


class UnsupportedFormatError(InputFileError):
    """The file's extension is not one the loader reads."""


class CorruptFileError(InputFileError):
    """The file could not be parsed: truncated, garbage, or inconsistent counts."""


class EmptyMeshError(InputFileError):
    """The file parsed but holds no vertices, faces or points."""


class NonFiniteError(InputFileError):
    """Coordinates contain NaN or infinity."""


class FaceIndexError(InputFileError):
    """A face refers to a vertex index outside ``[0, n_vertices)``."""


class DegenerateMeshError(InputFileError):
    """Every face is degenerate (zero area or repeated vertices)."""


class CheckpointError(InputFileError):
    """A checkpoint or cache file is missing keys, truncated, corrupted or unsafe."""


class WeightsNotFoundError(Shapes3DError):
    """No pretrained weights were found in any of the searched places."""
