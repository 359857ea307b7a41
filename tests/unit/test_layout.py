"""test_layout.py - Python's copy of prism_common.h matches the compiled header, constant by constant."""

import re
from pathlib import Path

import pytest

from prism_xdp import layout as L
from prism_xdp.native import ffi, lib

COMMON_H = Path(__file__).resolve().parents[2] / "xdp_progs" / "prism_common.h"


def header_constants() -> list[str]:
    names = re.findall(r"^#define\s+(PRISM_[A-Z0-9_]+)\s+\S", COMMON_H.read_text(), re.M)
    return [n for n in names if n != "PRISM_COMMON_H"]


@pytest.mark.parametrize("name", header_constants())
def test_constant_matches_header(name: str) -> None:
    assert getattr(L, name) == getattr(lib, name)


def test_counter_words_match_struct() -> None:
    assert L.PRISM_COUNTER_WORDS * 8 == ffi.sizeof("struct prism_steer_counters")
    assert len(L.MALFORMED_REASONS) == L.PRISM_MAL_MAX


def test_counter_field_offsets() -> None:
    # Each named field sits at the word index layout.COUNTER_FIELDS gives it.
    for word, (name, idx) in enumerate(L.COUNTER_FIELDS):
        offset = ffi.offsetof("struct prism_steer_counters", name)
        if idx is not None:
            offset += idx * 8
        assert offset == word * 8, (name, idx)


def test_xsk_slot() -> None:
    assert L.xsk_slot(0, L.PRISM_CLASS_LOW) == 0
    assert L.xsk_slot(0, L.PRISM_CLASS_HIGH) == 1
    assert L.xsk_slot(3, 1) == 3 * L.PRISM_NCLASS + 1
    with pytest.raises(ValueError, match="queue 64"):
        L.xsk_slot(64, 0)
    with pytest.raises(ValueError, match="class 4"):
        L.xsk_slot(0, 4)
