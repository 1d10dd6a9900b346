"""trainer.npz.read_npz against np.load: every layout np.savez writes, and damaged archives."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from trainer import npz
from trainer.npz import read_npz


def _same(got: dict[str, np.ndarray], path: Path) -> None:
    with np.load(path) as ref:
        assert sorted(got) == sorted(ref.files)
        for name in ref.files:
            assert got[name].dtype == ref[name].dtype and got[name].shape == ref[name].shape
            assert np.array_equal(got[name], ref[name], equal_nan=got[name].dtype.kind == "f")


def test_reads_what_np_load_reads(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {"rows": np.arange(5000), "labels": rng.integers(0, 3, 5000), "probs": rng.random((5000, 3), np.float32),
              "fortran": np.asfortranarray(rng.random((7, 5))), "flags": rng.random(9) < 0.5, "scalar": np.float64(2.5),
              "empty": np.zeros((0, 4), np.int16), "big_endian": np.arange(6, dtype=">i4"), "nan": np.array([np.nan, 1.0]),
              "text": np.array(["neg", "pos"])}
    plain, packed = tmp_path / "plain.npz", tmp_path / "packed.npz"
    np.savez(plain, **arrays)
    np.savez_compressed(packed, **arrays)  # not the layout it reads itself: np.load reads it
    for path in (plain, packed):
        got = read_npz(path)
        _same(got, path)
    got = read_npz(plain)
    got["probs"][0, 0] = 7.0  # writable, as np.load's arrays are
    assert npz._read(bytearray(plain.read_bytes()))["rows"][-1] == 4999  # the fast path, not the fallback


def test_damaged_archives_raise_as_np_load_does(tmp_path: Path) -> None:
    path = tmp_path / "p.npz"
    np.savez(path, rows=np.arange(1000), probs=np.random.default_rng(1).random((1000, 2)))
    data = bytearray(path.read_bytes())
    flipped = tmp_path / "flipped.npz"
    data[5000] ^= 0xFF  # inside the probs: the CRC no longer matches
    flipped.write_bytes(bytes(data))
    with pytest.raises(zipfile.BadZipFile):
        read_npz(flipped)
    torn = tmp_path / "torn.npz"
    torn.write_bytes(path.read_bytes()[:9000])
    with pytest.raises((zipfile.BadZipFile, ValueError, EOFError, OSError)):
        read_npz(torn)
    for cut in list(range(1, 200)) + list(range(len(data) - 200, len(data))):  # cut anywhere: raised, never wrong
        partial = tmp_path / "partial.npz"
        partial.write_bytes(path.read_bytes()[:cut])
        with pytest.raises((zipfile.BadZipFile, ValueError, EOFError, OSError)):
            read_npz(partial)
    single = tmp_path / "single.npz"
    with open(single, "wb") as f:
        np.save(f, np.arange(3))  # an .npy under an .npz name
    with pytest.raises(ValueError, match="not an npz archive"):
        read_npz(single)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, rows=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError):
        read_npz(pickled)  # object arrays are never unpickled
