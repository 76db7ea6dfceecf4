"""Resource limits applied to untrusted inputs.

:data:`MAX_UNCOMPRESSED_BYTES` bounds what any *compressed* input may inflate to: an NPZ
member, a ``binary_compressed`` PCD block, a glTF buffer (embedded base64 or external
file) and a GLB file. It is checked before decompressing when a header declares the size
and while decompressing (bytes counted, declared sizes not trusted), so a small file that
inflates to gigabytes (a decompression bomb) is refused with
:class:`~shapes3d.errors.TooLargeError` instead of exhausting memory.

Default 1 GiB. Override per process by assigning ``limits.MAX_UNCOMPRESSED_BYTES``, or for a
whole run (worker processes included) with the environment variable
``SHAPES3D_MAX_UNCOMPRESSED``: a byte count, optionally with a ``K``/``M``/``G``/``T`` suffix
(powers of 1024), e.g. ``SHAPES3D_MAX_UNCOMPRESSED=4G``. The environment variable wins.
"""

from __future__ import annotations

import os

from shapes3d.errors import ConfigError, TooLargeError

MAX_UNCOMPRESSED_ENV = "SHAPES3D_MAX_UNCOMPRESSED"
#: Largest uncompressed size (bytes) a compressed input may have; see the module docstring.
MAX_UNCOMPRESSED_BYTES: int = 1 << 30

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """``"1073741824"``, ``"512M"``, ``"4G"``, ``"2GiB"`` -> bytes; ConfigError otherwise."""
    s = str(text).strip().upper().removesuffix("IB").removesuffix("B")
    unit = s[-1:] if s[-1:] in _UNITS else ""
    number = s[: len(s) - len(unit)].strip()
    try:
        value = int(float(number) * _UNITS[unit]) if number else -1
    except ValueError:
        value = -1
    if value <= 0:
        raise ConfigError(f"{MAX_UNCOMPRESSED_ENV}={text!r}: expected a positive byte count such as 1073741824, "
                          "512M or 4G")
    return value


def max_uncompressed_bytes() -> int:
    """The limit in force: ``$SHAPES3D_MAX_UNCOMPRESSED`` if set, else :data:`MAX_UNCOMPRESSED_BYTES`."""
    env = os.environ.get(MAX_UNCOMPRESSED_ENV)
    return parse_size(env) if env else int(MAX_UNCOMPRESSED_BYTES)


def too_large(path, what: str, size: int | None, limit: int) -> TooLargeError:
    """The error for ``what`` inflating past ``limit``; ``size`` is the declared size, None if counted."""
    amount = f"declares {size} bytes uncompressed" if size is not None else f"decompresses to more than {limit} bytes"
    return TooLargeError(path, f"{what} {amount}, over the limit of {limit} bytes on decompressed input "
                               f"(decompression bomb?); raise it with {MAX_UNCOMPRESSED_ENV} if the file is genuine")


def check_declared(path, what: str, size: int) -> None:
    """Refuse a header-declared uncompressed ``size`` above the limit, before decompressing anything."""
    limit = max_uncompressed_bytes()
    if size > limit:
        raise too_large(path, what, size, limit)


class BoundedReader:
    """File-like wrapper counting the bytes read from a decompressing stream; TooLargeError past the limit.

    The count is of bytes actually produced, so a member whose header understates (or overstates)
    its size is still stopped at the limit.
    """

    def __init__(self, fh, path, what: str, limit: int | None = None) -> None:
        self._fh, self._path, self._what = fh, path, what
        self.limit = max_uncompressed_bytes() if limit is None else limit
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:  # to the end, in bounded chunks (no buffer sized by the limit)
            parts = []
            while chunk := self.read(1 << 20):
                parts.append(chunk)
            return b"".join(parts)
        data = self._fh.read(min(n, self.limit - self.count + 1))  # at most one byte past the limit
        self.count += len(data)
        if self.count > self.limit:
            raise too_large(self._path, self._what, None, self.limit)
        return data

    def tell(self) -> int:
        """Bytes produced so far (the position in the decompressed stream)."""
        return self.count

    def readinto(self, buf) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)


# Sizes a user may ask for: bounded so that a typo (--resolution 10000) is an error naming the limit instead of an
# allocation of terabytes. Enforced by the configs (``__post_init__``), the jobs and the CLI's argument types.
#: Voxel grids (VoxNet input, voxel caches): 256^3 cells are 16 MiB per rotation and shape.
MAX_VOXEL_RESOLUTION = 256
#: Mesh extraction grids (marching cubes, corners per axis): 1024^3 SDF values are 4 GiB as float32.
MAX_EXTRACT_RESOLUTION = 1024
#: Image sides in pixels (renders, contact sheets, style images).
MAX_IMAGE_SIZE = 4096
#: Camera azimuths per elevation of a render or view fit.
MAX_VIEWS = 360
#: Samples / points per shape (SDF sampling, evaluation surface points).
MAX_POINTS = 100_000_000
