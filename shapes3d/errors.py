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


class DegenerateGeometryError(InputFileError, ValueError):
    """The geometry has zero extent (all points or vertices coincide): it cannot be normalised.

    Raised where the file is not known (e.g. :func:`~shapes3d.geometry.normalize.normalize`) with
    ``path="input"``; callers that know the file re-raise it with :meth:`for_path`. Also a
    ``ValueError`` for code that caught the bare ``ValueError`` this used to be.
    """

    def __init__(self, path: str | os.PathLike = "input", problem: str = "all points coincide (zero extent)") -> None:
        super().__init__(path, problem)

    def for_path(self, path: str | os.PathLike) -> DegenerateGeometryError:
        """The same problem, naming ``path`` (a no-op when it already names a file)."""
        return self if self.path != "input" else DegenerateGeometryError(path, self.problem)


class TooLargeError(InputFileError):
    """A compressed input would decompress to more than the configured limit (a decompression bomb).

    The limit is :data:`shapes3d.geometry.limits.MAX_UNCOMPRESSED_BYTES`, overridable with the
    ``SHAPES3D_MAX_UNCOMPRESSED`` environment variable.
    """


class CheckpointError(InputFileError):
    """A checkpoint or cache file is missing keys, truncated, corrupted or unsafe."""


class RunFolderError(Shapes3DError):
    """A training run folder does not fit the request: it holds a run and neither ``--resume`` nor
    ``--overwrite`` was given, ``--resume`` found nothing to resume, or the run to resume is finished or was
    trained on other data or another architecture."""


class DivergedError(Shapes3DError):
    """Training stopped because the loss (or a weight) became NaN or infinite; the last good checkpoint is kept."""


class WeightsNotFoundError(Shapes3DError):
    """No pretrained weights were found in any of the searched places."""


class Interrupted(KeyboardInterrupt):
    """A long run stopped on SIGINT or SIGTERM after cleaning up (workers stopped, caches consistent).

    ``signal_name`` is ``"SIGINT"`` or ``"SIGTERM"``; :attr:`exit_code` is the shell convention
    (128 + signal number: 130, 143); ``partial`` is what the run had finished (e.g. the
    :class:`~shapes3d.data.preprocess.PreprocessReport` so far), or None. Work already finished
    is kept, so running the same command again resumes.

    Deliberately a ``KeyboardInterrupt`` (a ``BaseException``), not a :class:`Shapes3DError`: like
    Ctrl-C it must pass through ``except Exception`` handlers (one bad file must not swallow
    the request to stop), and a caller that only knows ``KeyboardInterrupt`` still stops cleanly.
    """

    def __init__(self, signal_name: str, detail: str = "", partial: object = None) -> None:
        import signal as _signal

        self.signal_name = signal_name
        self.signum = int(getattr(_signal, signal_name, 0))
        self.exit_code = 128 + self.signum if self.signum else 130
        self.detail = detail
        self.partial = partial
        super().__init__(f"interrupted by {signal_name}" + (f": {detail}" if detail else ""))
