"""test_layout.py - the constants and counter layout Python uses are the compiled prism_common.h's, word by word.

A test may read lib here: it checks native's exports against the compiled module itself."""

import re
from pathlib import Path

import pytest

from prism_xdp.dataplane import native
from prism_xdp.dataplane.native import ffi, lib
from prism_xdp.dataplane.steer import COUNTER_FIELDS, MALFORMED_REASONS, xsk_slot

COMMON_H = Path(__file__).resolve().parents[2] / "xdp_progs" / "prism_common.h"


def header_constants() -> list[str]:
    names = re.findall(r"^#define\s+(PRISM_[A-Z0-9_]+)\s+\S", COMMON_H.read_text(), re.M)
    return [n for n in names if n != "PRISM_COMMON_H"]


@pytest.mark.parametrize("name", header_constants())
def test_constant_matches_header(name: str) -> None:
    # Every #define of the header is compiled into lib; those native exports are lib's.
    assert isinstance(getattr(lib, name), int)
    if hasattr(native, name):
        assert getattr(native, name) == getattr(lib, name)


def test_counter_words_match_struct() -> None:
    assert native.PRISM_COUNTER_WORDS * 8 == ffi.sizeof("struct prism_steer_counters")
    assert len(MALFORMED_REASONS) == native.PRISM_MAL_MAX


def test_counter_field_offsets() -> None:
    # Each named field sits at the word index layout.COUNTER_FIELDS gives it.
    for word, (name, idx) in enumerate(COUNTER_FIELDS):
        offset = ffi.offsetof("struct prism_steer_counters", name)
        if idx is not None:
            offset += idx * 8
        assert offset == word * 8, (name, idx)


def test_xsk_slot() -> None:
    assert xsk_slot(0, native.PRISM_CLASS_LOW) == 0
    assert xsk_slot(0, native.PRISM_CLASS_HIGH) == 1
    assert xsk_slot(3, 1) == 3 * native.PRISM_NCLASS + 1
    with pytest.raises(ValueError, match="queue 64"):
        xsk_slot(64, 0)
    with pytest.raises(ValueError, match="class 4"):
        xsk_slot(0, 4)
