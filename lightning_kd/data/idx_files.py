"""Read the IDX files of (Fashion-)MNIST, gzip-compressed or not. Pure torch + stdlib."""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib

import torch
from torch import Tensor

_DTYPES = {
    0x08: torch.uint8,
    0x09: torch.int8,
    0x0B: torch.int16,
    0x0C: torch.int32,
    0x0D: torch.float32,
    0x0E: torch.float64,
}
_REFETCH = "re-download it (or re-copy it from a good copy)"


def read_idx(path: str | os.PathLike) -> Tensor:
    """Read one IDX file (``.gz`` or raw) into a tensor of its stored shape and dtype.

    Format (LeCun et al., the MNIST page): two zero bytes, a dtype code, the number of dimensions, one
    big-endian uint32 per dimension, then the data, big-endian.

    Raises:
        ValueError: the file is empty, a truncated or corrupted gzip, not an IDX file (bad magic number), or
            holds more or fewer bytes than its header announces; the message names the file, what was
            expected and what was found.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        raise ValueError(f"IDX file {path!r} is empty (0 bytes): the download or copy was interrupted; {_REFETCH}.")
    if data[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        try:
            data = gzip.decompress(data)
        except (EOFError, OSError, zlib.error) as err:
            raise ValueError(
                f"IDX file {path!r} is a truncated or corrupted gzip archive ({err or type(err).__name__}); {_REFETCH}."
            ) from err
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        codes = " or ".join(f"{c:02x}" for c in _DTYPES)
        raise ValueError(
            f"{path!r} is not an IDX file (bad magic number {data[:4].hex() or 'none'}; expected 0000, then a "
            f"dtype code {codes}, then the number of dimensions); point at the (Fashion-)MNIST IDX files, e.g. "
            f"train-images-idx3-ubyte.gz, or {_REFETCH}."
        )
    dtype, ndim = _DTYPES[data[2]], data[3]
    if len(data) < 4 + 4 * ndim:
        raise ValueError(
            f"IDX file {path!r} is truncated inside its header: {ndim} dimensions need {4 + 4 * ndim} bytes, the "
            f"file has {len(data)}; {_REFETCH}."
        )
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    expected = math.prod(shape) * dtype.itemsize
    found = len(data) - 4 - 4 * ndim
    if found != expected:
        what = "is truncated" if found < expected else "has extra bytes after its data"
        raise ValueError(
            f"IDX file {path!r} {what}: its header says shape {shape} of {dtype} ({expected} bytes), the file "
            f"holds {found} bytes of data; {_REFETCH}."
        )
    body = bytearray(data[4 + 4 * ndim :])
    t = torch.frombuffer(body, dtype=dtype) if body else torch.empty(0, dtype=dtype)
    if dtype.itemsize > 1:
        t = t.view(torch.uint8).view(-1, dtype.itemsize).flip(1).contiguous().view(dtype).flatten()  # big → little
    return t.reshape(shape)
