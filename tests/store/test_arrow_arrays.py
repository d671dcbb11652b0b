"""The writer's numpy -> Arrow conversion equals ``pa.array`` (which it replaces to keep pandas
out of a build): same values, same nulls, same checked casts."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from vpbatch.store.schema import _chars, arrow_array, arrow_strings

_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint32, np.uint64, np.float32,
           np.float64, np.bool_]
_TARGETS = {np.dtype(np.int64): [pa.int64(), pa.uint32(), pa.int32()],
            np.dtype(np.uint64): [pa.uint64(), pa.int64()],
            np.dtype(np.float64): [pa.float64(), pa.float32()],
            np.dtype(np.int8): [pa.int8(), pa.int64()]}


@st.composite
def _columns(draw: st.DrawFn) -> tuple[np.ndarray, pa.DataType, np.ndarray | None]:
    dtype = np.dtype(draw(st.sampled_from(_DTYPES)))
    values = draw(hnp.arrays(dtype, st.integers(0, 70)))
    target = draw(st.sampled_from(_TARGETS.get(dtype, [pa.from_numpy_dtype(dtype)])))
    mask = draw(st.none() | hnp.arrays(np.bool_, len(values)))
    return values, target, mask


@settings(max_examples=300, deadline=None)
@given(_columns())
def test_arrow_array_given_any_column_equals_pa_array(
        column: tuple[np.ndarray, pa.DataType, np.ndarray | None]) -> None:
    values, target, mask = column
    try:
        expected = pa.array(values, type=target, mask=mask)
    except (pa.ArrowInvalid, OverflowError):
        with pytest.raises(pa.ArrowInvalid):
            arrow_array(values, target, mask)
        return
    got = arrow_array(values, target, mask)
    assert got.type == expected.type
    assert got.null_count == expected.null_count
    assert got.to_pylist() == expected.to_pylist() or (
        # NaN != NaN: compare the bits where both hold a float
        np.array_equal(got.to_numpy(zero_copy_only=False), expected.to_numpy(
            zero_copy_only=False), equal_nan=True))


def test_arrow_strings_and_chars_equal_pa_array() -> None:
    names = ["CHOP", "UP", "DOWN", "", "é"]
    assert arrow_strings(names).equals(pa.array(names, type=pa.string()))
    codes = np.frombuffer(b"AMCRTF\x00BN", dtype=np.uint8)
    expected = pa.array(codes.view("S1"), type=pa.binary()).cast(pa.string())
    assert _chars(codes).equals(expected)


def test_arrow_array_given_a_dtype_arrow_stores_in_other_width_refuses() -> None:
    """numpy's datetime64[D] is 8 bytes, Arrow's date32 4: wrapping the buffer would misread."""
    with pytest.raises(TypeError, match="datetime64"):
        arrow_array(np.array(["2026-02-06"], dtype="datetime64[D]"), pa.date32())
