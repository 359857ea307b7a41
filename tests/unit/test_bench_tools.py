"""test_bench_tools.py - the A/B's tools: command lines and parsers of sockperf, prism-memc-rtt, wrk and iperf3, fed with outputs recorded from the real tools; ethtool features; the workload names."""

from __future__ import annotations

from pathlib import Path

import pytest

from prism_xdp.dataplane.errors import ConfigError
from prism_xdp.lab.bench import iperf, memcache, sockperf, webserve, workloads
from prism_xdp.lab.bench.samples import expand_histogram, nearest_rank
from prism_xdp.lab.bench.toolproc import listening
from prism_xdp.lab.testhost import links

DATA = Path(__file__).parent / "data" / "realtools"


def text(name: str) -> str:
    return (DATA / name).read_text()


def test_sockperf_round_trips_are_rx_minus_tx_of_every_row() -> None:
    rtts = sockperf.parse_full_log(text("sockperf-udp.csv"))
    rows = [line for line in text("sockperf-udp.csv").splitlines() if line[:1].isdigit()]
    assert len(rtts) == len(rows) > 300
    # sockperf's own column is the one-way estimate: half the round trip, to the ns it prints.
    for row, rtt in zip(rows[:50], rtts, strict=False):
        assert float(row.split(",")[3]) == pytest.approx(rtt / 2, abs=0.002)
    assert len(sockperf.parse_full_log(text("sockperf-tcp.csv"))) > 300
    summary = sockperf.parse_summary(text("sockperf-udp.out"))
    assert summary["dropped"] == 0 and summary["error"] is None and summary["sent"] == summary["received"] == 601


def test_sockperf_failures_are_named_though_it_exits_0() -> None:
    assert sockperf.parse_summary(text("sockperf-tcp-refused.out"))["error"].startswith("ERROR: Can`t connect")
    assert "No messages were received" in str(sockperf.parse_summary(text("sockperf-udp-noserver.out"))["error"])
    assert sockperf.parse_full_log(text("sockperf-udp-noserver.csv")) == []
    argv = sockperf.client_argv("10.42.0.1", 7001, True, 10, 64, "/tmp/x.csv")
    assert argv[:2] == ["sockperf", "ping-pong"] and "--full-log" in argv and argv[-1] == "--tcp"


def test_memc_rtt_file() -> None:
    head, values = memcache.parse(text("memc-rtt.txt"))
    assert head["requests"] == len(values) == 370 and head["gets"] + head["sets"] == 370 and head["misses"] == 0
    assert values[0] == 155.34  # ns in the file, µs out
    with pytest.raises(ValueError, match="not a prism-memc-rtt latency file"):
        memcache.parse("155340\n")


def test_wrk_histogram_gives_wrks_own_percentiles() -> None:
    got = webserve.parse(text("wrk.out"))
    assert got["requests"] == 6784 and got["errors"] == {"connect": 0, "read": 0, "write": 0, "status": 0,
                                                         "timeout": 0}
    ordered = sorted(expand_histogram(got["histogram"]))  # type: ignore[arg-type]
    printed = got["wrk_percentiles"]
    assert printed == {"p50": 167.0, "p75": 181.0, "p90": 199.0, "p99": 342.0}  # type: ignore[comparison-overlap]
    for key, p in (("p50", 50), ("p75", 75), ("p90", 90), ("p99", 99)):
        assert nearest_rank(ordered, p) == printed[key]  # type: ignore[index]
    with pytest.raises(ValueError, match="no latency histogram.*Connection refused"):
        webserve.parse(text("wrk-refused.out"))


def test_nginx_config_keeps_everything_in_its_directory(tmp_path: Path) -> None:
    conf = webserve.prepare(tmp_path, "10.42.0.1", 80)
    body = conf.read_text()
    assert "listen 10.42.0.1:80;" in body and f"root {tmp_path}/www;" in body
    paths = [w.rstrip(";") for w in body.split() if w.startswith("/")]
    assert paths and all(p.startswith(str(tmp_path)) for p in paths)
    assert (tmp_path / "www" / "index.html").stat().st_size == webserve.PAGE_BYTES
    assert "latency(i)" in (tmp_path / "done.lua").read_text()


def test_iperf3_receiver_side() -> None:
    tcp = iperf.parse(text("iperf3-tcp.json"))
    assert tcp["bytes"] == 724828160 and tcp["gbps"] == pytest.approx(2.896, abs=0.001) and tcp["packets"] is None
    udp = iperf.parse(text("iperf3-udp64.json"))
    assert udp["packets"] == 158120 - 409 and udp["lost"] == 409  # received = sent - lost
    assert udp["bytes"] == udp["packets"] * 64  # type: ignore[operator]
    with pytest.raises(ValueError, match="iperf3: unable to connect to server: Connection refused"):
        iperf.parse(text("iperf3-refused.json"))
    with pytest.raises(ValueError, match="printed no JSON"):
        iperf.parse("iperf3: error - unable to connect\n")
    assert iperf.client_argv("10.42.0.2", 5201, 12, 64)[-6:] == ["--json", "-u", "-b", "0", "-l", "64"]


def test_low_and_high_names() -> None:
    assert workloads.parse_low("udp64x2") == workloads.Low("udp64x2", "udp", 2, 64)
    assert workloads.parse_low("tcp2") == workloads.Low("tcp2", "tcp", 2)
    assert workloads.parse_low("tcp2r") == workloads.Low("tcp2r", "tcp", 2, reverse=True)
    assert iperf.client_argv("10.42.0.2", 5201, 5, None, reverse=True)[-1] == "-R"
    assert workloads.parse_low("idle").flows == 0 and workloads.parse_low("prism-gen").kind == "prism-gen"
    assert [lo.name for lo in workloads.parse_low_list(workloads.LOW_DEFAULT)] == workloads.LOW_DEFAULT.split(",")
    for bad, why in (("tcp0", "1 to 16 TCP flows"), ("udp1500", "UDP payload must be 16..1422"),
                     ("bulk", "'bulk' is not a LOW load"), ("tcp1,tcp1", "'tcp1' is listed twice"), (",", "empty")):
        with pytest.raises(ConfigError, match=why):
            workloads.parse_low_list(bad)
    assert [h.port for h in workloads.parse_high_list("nginx,sockperf-udp")] == [80, 7000]
    with pytest.raises(ConfigError, match="--high: 'redis' is not a HIGH workload; choose from sockperf-udp"):
        workloads.parse_high_list("sockperf-udp,redis")
    ports = [h.port for h in workloads.HIGH.values()]
    assert len(set(ports)) == len(ports) <= 10  # all fit the kernel patch's /proc/port at once


def test_sockperf_at_a_fixed_rate() -> None:
    """sockperf-udp@N: the same ping-pong at N requests/s on a port (and priority rule) of its own."""
    fast, rated, tcp = workloads.parse_high_list("sockperf-udp,sockperf-udp@400,sockperf-tcp@1000")
    assert (rated.name, rated.port, rated.mps, rated.proto) == ("sockperf-udp@400", 7010, 400, "udp")
    assert (tcp.port, tcp.mps, tcp.proto) == (7011, 1000, "tcp") and fast.mps is None
    assert "at 400/s" in rated.what
    argv = sockperf.client_argv("10.42.0.1", rated.port, False, 5, 64, "/tmp/x.log", rated.mps)
    assert argv[-1] == "--mps=400" and "-p" in argv and argv[argv.index("-p") + 1] == "7010"
    assert "--mps" not in " ".join(sockperf.client_argv("10.42.0.1", 7000, False, 5, 64, "/tmp/x.log"))
    for bad, why in (("sockperf-udp@0", "1..100000"), ("sockperf-udp@5,sockperf-udp@6", "one fixed rate"),
                     ("nginx@5", "'nginx@5' is not a HIGH workload")):
        with pytest.raises(ConfigError, match=why):
            workloads.parse_high_list(bad)


# Recorded from `ethtool -k` on the remote's uplink veth after `ethtool -K ... tx off`.
ETHTOOL_TXOFF = """Features for pxtxp:
rx-checksumming: on
tx-checksumming: off
\ttx-checksum-ipv4: off [fixed]
\ttx-checksum-ip-generic: off
\ttx-checksum-sctp: off
scatter-gather: on
\ttx-scatter-gather: on
tcp-segmentation-offload: on
\ttx-tcp-segmentation: off [requested on]
\ttx-tcp6-segmentation: off [requested on]
generic-segmentation-offload: on
generic-receive-offload: off
highdma: on
tx-udp-segmentation: off [requested on]
"""


def test_offloads_restore_what_was_wanted() -> None:
    off = links.parse_features(ETHTOOL_TXOFF)
    assert "tx-checksumming" not in off and "generic-receive-offload" not in off  # ethtool -K does not take them
    assert off["tx-tcp-segmentation"] == links.Feature(active=False, wanted=True, fixed=False)
    assert off["tx-checksum-ipv4"].fixed and off["highdma"].active
    before = links.parse_features(ETHTOOL_TXOFF.replace("tx-checksum-ip-generic: off", "tx-checksum-ip-generic: on")
                                     .replace("tx-checksum-sctp: off", "tx-checksum-sctp: on"))
    # TSO stayed wanted on: putting the checksums back is all it takes.
    assert links.changes(before, off) == {"tx-checksum-ip-generic": True, "tx-checksum-sctp": True}
    assert links.changes(off, off) == {}


def test_listening_reads_proc_net() -> None:
    tcp = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
           "   0: 01002A0A:1B59 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n"
           "   1: 01002A0A:1F90 64002A0A:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2 1\n")
    assert listening(tcp, 7001, tcp=True) and not listening(tcp, 7000, tcp=True)
    assert not listening(tcp, 8080, tcp=True)  # connected, not listening
    udp = ("   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref\n"
           "  1: 01002A0A:1B58 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 3 2\n")
    assert listening(udp, 7000, tcp=False)
