"""Read the IDX files of (Fashion-)MNIST, gzip-compressed or not. Pure torch + stdlib."""

from __future__ import annotations

import gzip
import os
import struct

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


def read_idx(path: str | os.PathLike) -> Tensor:
    """Read one IDX file (``.gz`` or raw) into a tensor of its stored shape and dtype.

    Format (LeCun et al., the MNIST page): two zero bytes, a dtype code, the number of dimensions, one
    big-endian uint32 per dimension, then the data, big-endian.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        data = gzip.decompress(data)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {data[:4].hex()}).")
    dtype, ndim = _DTYPES[data[2]], data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = bytearray(data[4 + 4 * ndim :])
    t = torch.frombuffer(body, dtype=dtype) if body else torch.empty(0, dtype=dtype)
    if dtype.itemsize > 1:
        t = t.view(torch.uint8).view(-1, dtype.itemsize).flip(1).contiguous().view(dtype).flatten()  # big → little
    expected = 1
    for s in shape:
        expected *= s
    if t.numel() != expected:
        raise ValueError(f"{path} is truncated: header says {shape} ({expected} values), found {t.numel()}.")
    return t.reshape(shape)
