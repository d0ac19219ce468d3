"""The IDX file format of MNIST: a big-endian header, then the raw array (gzipped or not)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from .base import DataFormatError

GZIP_MAGIC = b"\x1f\x8b"
UNSIGNED_BYTE = 0x08


def read_idx(path: Path) -> torch.Tensor:
    """The uint8 array stored in the IDX file at `path` (gzip is detected from the content)."""
    path = Path(path)
    with open(path, "rb") as raw:
        compressed = raw.read(2) == GZIP_MAGIC
    try:
        opener = gzip.open if compressed else open
        with opener(path, "rb") as stream:
            content = stream.read()
    except (OSError, EOFError) as error:
        raise DataFormatError(f"{path} could not be read as an IDX file: {error}") from None
    if len(content) < 4:
        raise DataFormatError(f"{path} is too short to be an IDX file ({len(content)} bytes)")
    zeros, code, ndim = struct.unpack(">HBB", content[:4])
    if zeros != 0 or ndim == 0:
        raise DataFormatError(
            f"{path} is not an IDX file: its header starts with {content[:4].hex()} "
            "(expected 0000 then a type code and the number of dimensions)"
        )
    if code != UNSIGNED_BYTE:
        raise DataFormatError(
            f"{path} stores IDX type code 0x{code:02x}; only unsigned bytes (0x08) are supported"
        )
    header = 4 + 4 * ndim
    if len(content) < header:
        raise DataFormatError(f"{path} ends inside its IDX header")
    shape = struct.unpack(f">{ndim}I", content[4:header])
    expected = int(np.prod(shape))
    if len(content) - header != expected:
        raise DataFormatError(
            f"{path}: the header promises shape {shape} ({expected} bytes) but "
            f"{len(content) - header} bytes follow it (truncated or corrupt file)"
        )
    array = np.frombuffer(content, dtype=np.uint8, offset=header).reshape(shape)
    return torch.from_numpy(array.copy())


def write_idx(path: Path, array: np.ndarray, *, compress: bool = False) -> None:
    """Write a uint8 array as an IDX file (for tests and for preparing data)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, UNSIGNED_BYTE, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if compress else open
    with opener(path, "wb") as stream:
        stream.write(header + array.tobytes())
