"""The on-disk spool format: segment files of framed records.

A segment is a fixed-size, pre-allocated file (``seg-00000001.log``). It starts with a
16-byte file header (magic ``EVTSPOOL``, format version, reserved) and then holds frames::

    u32 length | u32 crc32(payload) | payload (length bytes, payload[0] is the record type)

All integers are little-endian. The file is pre-allocated with zeros, so a zero length marks
the end of what was written; a frame whose checksum does not match is a write torn by a crash
(or power loss) and ends the readable part too. Nothing after it is trusted.

Record types (the first payload byte):

``K`` key      ``<B I`` key id, then the UTF-8 metric key (interned once per segment)
``R`` run      ``<B I`` run index, then the ASCII run id (interned once per segment)
``m`` point    ``<B I I d q q`` run, key id, value, timestamp (ms), step: 33 bytes
``M`` points   ``<B I q q I`` run, timestamp, step, n; then n times ``<I d`` key id, value
``S`` start    ``<B I`` run, then msgpack ``IngestRunStart``
``E`` end      ``<B I`` run, then msgpack ``IngestRunEnd``
``P`` params   ``<B I`` run, then msgpack ``list[IngestKeyValue]``
``T`` tags     ``<B I`` run, then msgpack ``list[IngestKeyValue]``
``A`` artifact ``<B I`` run, then msgpack ``SpooledArtifact``
``Z`` seal     the writer moved on to the next segment; nothing follows

Interning is per segment so that every segment can be read on its own: a key or run index
means the same thing everywhere in its segment and nothing outside it.
"""

from __future__ import annotations

import functools
import struct

import msgspec
import numpy as np

MAGIC = b"EVTSPOOL"
FORMAT_VERSION = 1
FILE_HEADER = struct.Struct("<8sII")
DATA_START = FILE_HEADER.size  # 16: where the first frame starts

FRAME_HEADER = struct.Struct("<II")
FRAME_OVERHEAD = FRAME_HEADER.size

T_KEY = ord("K")
T_RUN = ord("R")
T_POINT = ord("m")
T_POINTS = ord("M")
T_START = ord("S")
T_END = ord("E")
T_PARAMS = ord("P")
T_TAGS = ord("T")
T_ARTIFACT = ord("A")
T_SEAL = ord("Z")

# Records that carry nothing for the server on their own (they only give meaning to others).
STRUCTURAL = frozenset((T_KEY, T_RUN, T_SEAL))

REF = struct.Struct("<BI")  # type + id (run or key): the prefix of every non-point record
POINT = struct.Struct("<BIIdqq")
POINT_FRAME_SIZE = FRAME_OVERHEAD + POINT.size  # 41
POINTS_HEAD = struct.Struct("<BIqqI")
POINTS_ITEM = struct.Struct("<Id")

# The same layouts as numpy record types over whole frames (header included), so the sender
# reads a run of equal frames with one ``np.frombuffer`` instead of a Python step per frame.
_FRAME_PREFIX = [("length", "<u4"), ("crc", "<u4"), ("type", "u1"), ("run", "<u4")]
POINT_FRAME_DTYPE = np.dtype(
    [*_FRAME_PREFIX, ("key", "<u4"), ("value", "<f8"), ("timestamp", "<i8"), ("step", "<i8")]
)
POINTS_ITEM_DTYPE = np.dtype([("key", "<u4"), ("value", "<f8")])
assert POINT_FRAME_DTYPE.itemsize == POINT_FRAME_SIZE
assert POINTS_ITEM_DTYPE.itemsize == POINTS_ITEM.size


@functools.lru_cache(maxsize=64)
def points_frame_dtype(count: int) -> np.dtype[np.void]:
    """The record type of a whole ``M`` frame of ``count`` items (frames of one
    ``log_metrics`` call shape repeat, so a handful of counts cover a spool)."""
    dtype = np.dtype(
        [
            *_FRAME_PREFIX,
            ("timestamp", "<i8"),
            ("step", "<i8"),
            ("count", "<u4"),
            ("items", POINTS_ITEM_DTYPE, (count,)),
        ]
    )
    assert dtype.itemsize == FRAME_OVERHEAD + POINTS_HEAD.size + count * POINTS_ITEM.size
    return dtype


SEAL_FRAME_SIZE = FRAME_OVERHEAD + 1


class SpooledArtifact(msgspec.Struct):
    """An artifact copied into the spool: ``file`` under the spool's ``artifacts/`` folder,
    to be uploaded to ``path`` relative to the run's artifact root."""

    file: str
    path: str


def file_header() -> bytes:
    return FILE_HEADER.pack(MAGIC, FORMAT_VERSION, 0)


def check_file_header(data: bytes) -> bool:
    if len(data) < FILE_HEADER.size:
        return False
    magic, version, _ = FILE_HEADER.unpack_from(data)
    return bool(magic == MAGIC and version == FORMAT_VERSION)
