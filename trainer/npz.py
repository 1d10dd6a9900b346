"""Reading the `np.savez` archives that jobs write (`test_predictions.npz`), fast.

A report over a sweep reads one archive per job: 10,000 of them took 3.5 s through `np.load`,
most of it `zipfile` bookkeeping and `ast.literal_eval` of the same three array headers again
and again. `np.savez` stores its arrays uncompressed, one zip member each, so `read_npz` reads
the file in one call, walks the members' local headers, checks each member's CRC-32 as
`zipfile` does, parses each distinct array header once, and returns views on the bytes. Any
archive it does not recognise (compressed, data descriptors, object arrays, another header
version) is read by `np.load` instead, so the answer is always `np.load`'s.
"""

from __future__ import annotations

import functools
import io
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

_LOCAL = struct.Struct("<4sHHHHHIIIHH")  # the zip local file header, 30 bytes
_LOCAL_SIG, _CENTRAL_SIG, _END_SIG = b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06"
_ZIP64 = 0x0001
_MAGIC = b"\x93NUMPY\x01\x00"  # npy format 1.0, what np.save writes for any plain array


class _Unknown(Exception):
    """Not the layout `read_npz` reads itself: let np.load read it."""


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an `np.savez` archive by name (without `.npy`), as `np.load` gives them;
    raises what `np.load` raises for a damaged one (`zipfile.BadZipFile`, `ValueError`, `OSError`)."""
    with open(path, "rb") as f:  # into a bytearray: the arrays are views on it, writable as np.load's are
        data = bytearray(os.fstat(f.fileno()).st_size)
        if f.readinto(data) != len(data):
            raise OSError(f"{path}: changed while it was read")
    try:
        return _read(data)
    except (_Unknown, struct.error, IndexError):  # struct.error: cut inside a header
        loaded = np.load(io.BytesIO(data), allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # an .npy under an .npz name
            raise ValueError(f"{path}: not an npz archive (a single {type(loaded).__name__})") from None
        with loaded as archive:
            return {name: archive[name] for name in archive.files}


def _read(data: bytearray) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    pos = 0
    while data.startswith(_LOCAL_SIG, pos):
        _, _, flags, method, _, _, crc, csize, _, name_len, extra_len = _LOCAL.unpack_from(data, pos)
        if flags & 0x08 or method != 0:  # sizes after the data, or compressed (np.savez_compressed)
            raise _Unknown
        name = data[pos + 30:pos + 30 + name_len].decode("utf-8", "replace")
        extra = data[pos + 30 + name_len:pos + 30 + name_len + extra_len]
        if csize == 0xFFFFFFFF:
            csize = _zip64_size(extra)
        start = pos + 30 + name_len + extra_len
        member = memoryview(data)[start:start + csize]
        if len(member) != csize or zlib.crc32(member) != crc:
            raise _Unknown  # np.load then says what is wrong (a torn or damaged archive)
        arrays[name[:-4] if name.endswith(".npy") else name] = _array(data, start, csize)
        pos = start + csize
    # the central directory follows the members, and the archive ends with its end record (no
    # comment: np.savez writes none); anything else, np.load judges
    if not arrays or not data.startswith(_CENTRAL_SIG, pos) or not data.startswith(_END_SIG, len(data) - 22):
        raise _Unknown
    return arrays


def _zip64_size(extra: bytes | bytearray) -> int:
    """The compressed size from a local header's zip64 extra field (uncompressed size first)."""
    at = 0
    while at + 4 <= len(extra):
        kind, size = struct.unpack_from("<HH", extra, at)
        if kind == _ZIP64 and size >= 16:
            return int(struct.unpack_from("<Q", extra, at + 12)[0])
        at += 4 + size
    raise _Unknown


def _array(data: bytearray, start: int, size: int) -> np.ndarray:
    if data[start:start + 8] != _MAGIC:
        raise _Unknown
    header_len = struct.unpack_from("<H", data, start + 8)[0]
    shape, fortran, dtype = _header(bytes(data[start + 10:start + 10 + header_len]))
    offset = 10 + header_len
    count = math.prod(shape)
    if dtype.hasobject or offset + count * dtype.itemsize != size:
        raise _Unknown
    array = np.frombuffer(data, dtype=dtype, count=count, offset=start + offset)
    return array.reshape(shape[::-1]).T if fortran else array.reshape(shape)


@functools.lru_cache(maxsize=256)  # every job's archive has the same few headers
def _header(header: bytes) -> tuple[tuple[int, ...], bool, np.dtype]:
    fp = io.BytesIO(_MAGIC + struct.pack("<H", len(header)) + header)
    np.lib.format.read_magic(fp)
    shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
    return tuple(shape), bool(fortran), dtype
