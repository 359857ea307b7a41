"""test_kernel_patch.py - the A/B bench selects the PRISM kernel patch's configurations only when its /proc knobs exist (driven with a stand-in directory for /proc), writes them as the patch expects, and names a configuration this host cannot run; the daemon's options (+kernel-high, +skb, +uplink-xsk) are configurations of their own, on request."""

from __future__ import annotations

from pathlib import Path

import pytest

from prism_xdp.dataplane.errors import ConfigError, PrismError
from prism_xdp.lab.bench.configs import (
    DESCRIPTIONS,
    KernelPatch,
    choose,
    daemon_setup,
    kernel_configs,
    kernel_knobs,
    with_settings,
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


def test_the_options_are_configurations_of_their_own_only_on_request(tmp_path: Path) -> None:
    assert not any("+" in c for c in choose(None, str(tmp_path)))
    assert choose("prism-sync,prism-sync+kernel-high", str(tmp_path)) == ["prism-sync", "prism-sync+kernel-high"]
    assert choose("prism-vanilla+skb,prism-batch+skb", str(tmp_path)) == ["prism-vanilla+skb", "prism-batch+skb"]
    assert "prism-batch+kernel-high" in DESCRIPTIONS and "prism-sync+skb" in DESCRIPTIONS
    with pytest.raises(ConfigError, match="'prism-vanilla.kernel-high' is not available"):
        choose("prism-vanilla+kernel-high", str(tmp_path))  # vanilla folds HIGH away: nothing to measure


def test_an_option_sets_its_daemon_setting_on_top_of_the_benchs() -> None:
    bench = {"scheduler": {"batch": "32"}}
    assert daemon_setup("prism-sync", bench) == ("sync", bench)
    mode, settings = daemon_setup("prism-batch+skb", bench)
    assert mode == "batch" and settings == {"scheduler": {"batch": "32"}, "uplink": {"xdp_mode": '"skb"'}}
    mode, settings = daemon_setup("prism-sync+kernel-high", None)
    assert mode == "sync" and settings == {"forwarding": {"high_path": '"kernel"'}}
    assert daemon_setup("prism-vanilla+uplink-xsk", None) == ("vanilla", {"forwarding": {"uplink_delivery": '"xsk"'}})
    text = with_settings("[uplink]\ninterface = \"pxdu\"\n\n[control]\n", settings | {"uplink": {"xdp_mode": '"skb"'}})
    assert 'xdp_mode = "skb"' in text.split("[control]")[0] and 'high_path = "kernel"' in text
