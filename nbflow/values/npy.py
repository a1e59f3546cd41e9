""".npy bytes of an array as chunks that point into the array, and arrays read back
from ``.npy`` bytes without a second copy.

The chunks are exactly what ``np.save(f, array, allow_pickle=False)`` writes: numpy's own
header, then the elements in the order ``np.save`` writes them (Fortran order for a
Fortran-contiguous array, C order otherwise).
"""

from __future__ import annotations

import io

import numpy as np

from nbflow.values.encoded import Buffer

__all__ = ["load_npy", "npy_chunks"]


def npy_chunks(array: np.ndarray) -> list[Buffer] | None:
    """The ``.npy`` bytes of ``array`` as [header, elements]; None for arrays ``.npy``
    cannot hold without pickle.

    A contiguous array's elements are a view of its memory; any other array is copied
    once into C order (as ``np.save`` itself would do, in pieces).
    """
    if array.dtype.hasobject:
        return None
    if not (array.flags.c_contiguous or array.flags.f_contiguous):
        array = np.ascontiguousarray(array)
    header = _header(array)
    if header is None:
        return _saved(array)
    fortran = array.flags.f_contiguous and not array.flags.c_contiguous
    flat = array.T if fortran else array  # C-contiguous either way
    if not flat.nbytes:
        return [header]
    return [header, memoryview(flat.reshape(-1).view(np.uint8).data)]


def _header(array: np.ndarray) -> bytes | None:
    """The header ``np.save`` writes for ``array`` (format 1.0, else 2.0), or None."""
    fields = np.lib.format.header_data_from_array_1_0(array)
    for write in (np.lib.format.write_array_header_1_0, np.lib.format.write_array_header_2_0):
        out = io.BytesIO()
        try:
            write(out, fields)
        except ValueError:  # too big for format 1.0; a name latin-1 cannot hold (3.0)
            continue
        return out.getvalue()
    return None


def _saved(array: np.ndarray) -> list[Buffer] | None:
    """``np.save``'s own bytes (a copy): for the rare header only it can write."""
    out = io.BytesIO()
    try:
        np.save(out, array, allow_pickle=False)
    except ValueError:  # dtypes .npy cannot hold without pickle
        return None
    return [out.getbuffer()]


def load_npy(data: Buffer) -> np.ndarray:
    """The array in ``.npy`` bytes, never unpickling.

    From a ``bytearray`` the array takes over its memory (no copy: the caller must not
    use the bytearray again); from anything else it is a copy, so it is always writable.
    """
    if not isinstance(data, bytearray):
        return np.load(io.BytesIO(data), allow_pickle=False)
    stream = io.BytesIO(memoryview(data)[:_HEADER_PEEK])  # (BytesIO copies what it is given)
    try:
        version = np.lib.format.read_magic(stream)
        read = {
            (1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0,
        }[version]
        shape, fortran, dtype = read(stream)
    except (KeyError, ValueError, EOFError):  # other versions, long headers: numpy's way
        return np.load(io.BytesIO(data), allow_pickle=False)
    if dtype.hasobject or not dtype.itemsize:
        return np.load(io.BytesIO(data), allow_pickle=False)
    count = int(np.prod(shape, dtype=np.int64))
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=stream.tell())
    return flat.reshape(shape, order="F" if fortran else "C")


# An .npy header is at most 64 KiB in format 1.0; 2.0 headers are rarely bigger.
_HEADER_PEEK = 1 << 20
