"""test_errors.py - the errno gate: -errno from C becomes an exception that names the object."""

import errno

import pytest

from prism_xdp.dataplane.errors import NotSupported, PrismError
from prism_xdp.dataplane.native import check_rc


def test_non_negative_passes_through() -> None:
    assert check_rc(0, "x") == 0
    assert check_rc(17, "x") == 17


def test_errno_and_name_are_kept() -> None:
    with pytest.raises(PrismError) as info:
        check_rc(-errno.ENODEV, "AF_XDP socket", "eth9 queue 3", "no such interface")
    assert info.value.errno == errno.ENODEV
    assert "eth9 queue 3" in str(info.value)
    assert "no such interface" in str(info.value)


def test_unsupported_is_its_own_type() -> None:
    with pytest.raises(NotSupported):
        check_rc(-errno.EOPNOTSUPP, "zero-copy bind", "veth0")
