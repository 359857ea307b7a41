"""test_kernel_patch.py - the A/B bench selects the PRISM kernel patch's configurations only when its /proc knobs exist (driven with a stand-in directory for /proc), writes them as the patch expects, and names a configuration this host cannot run."""

from __future__ import annotations

from pathlib import Path

import pytest

from prism_xdp.dataplane.errors import ConfigError, PrismError
from prism_xdp.lab.bench.configs import (
    DESCRIPTIONS,
    KernelPatch,
    choose,
    kernel_configs,
    kernel_knobs,
)


def fake_proc(tmp_path: Path, knobs: tuple[str, ...] = ("port", "sync", "split")) -> str:
    for k in knobs:
        (tmp_path / k).write_text("0\n")
    return str(tmp_path)


def test_absent_knobs_mean_kernel_only(tmp_path: Path) -> None:
    configs, note = kernel_configs(str(tmp_path))
    assert configs == ["kernel", "kernel-txoff"] and "absent" in note
    assert kernel_knobs(fake_proc(tmp_path, ("port", "sync"))) is None  # all three, or none
    with pytest.raises(PrismError, match="no /proc/port"):
        KernelPatch(str(tmp_path))


def test_present_knobs_add_the_patched_configurations(tmp_path: Path) -> None:
    configs, note = kernel_configs(fake_proc(tmp_path))
    assert configs == ["kernel", "kernel-txoff", "kernel-prism-batch", "kernel-prism-sync"] and "present" in note


def test_knobs_are_written_as_the_patch_reads_them(tmp_path: Path) -> None:
    patch = KernelPatch(fake_proc(tmp_path))
    patch.apply([7000, 11211], sync=True)
    assert (tmp_path / "port").read_text() == "7000,11211\n" and (tmp_path / "sync").read_text() == "1\n"
    patch.apply([7000], sync=False)
    assert (tmp_path / "sync").read_text() == "0\n"
    patch.reset()
    assert (tmp_path / "port").read_text() == "0\n"  # writing 0 clears the list: stock behaviour
    with pytest.raises(ConfigError, match="at most 10 ports"):
        patch.apply(list(range(1, 12)), sync=False)


def test_configs_are_chosen_from_what_this_host_has(tmp_path: Path) -> None:
    assert choose(None, str(tmp_path)) == ["kernel", "kernel-txoff", "prism-vanilla", "prism-batch", "prism-sync"]
    assert choose("prism-sync,kernel", str(tmp_path)) == ["prism-sync", "kernel"]
    with pytest.raises(ConfigError, match="'kernel-prism-sync' is not available here .needs the PRISM kernel patch"):
        choose("kernel,kernel-prism-sync", str(tmp_path))
    with pytest.raises(ConfigError, match="'prism-fast' is not available"):
        choose("prism-fast", str(tmp_path))
    assert "kernel-prism-sync" in choose(None, fake_proc(tmp_path))


def test_the_kernel_high_path_is_a_configuration_of_its_own_only_on_request(tmp_path: Path) -> None:
    assert not any("kernel-high" in c for c in choose(None, str(tmp_path)))
    assert choose("prism-sync,prism-sync+kernel-high", str(tmp_path)) == ["prism-sync", "prism-sync+kernel-high"]
    assert "prism-batch+kernel-high" in DESCRIPTIONS
