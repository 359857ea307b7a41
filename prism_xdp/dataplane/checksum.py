"""checksum.py - how prism_xdp finishes TCP/UDP checksums: the method (kernel TX metadata or software), probed at start, and whether partial checksums from the uplink are accepted."""

from __future__ import annotations

from dataclasses import dataclass

from prism_xdp.dataplane import native
from prism_xdp.dataplane.errors import ConfigError
from prism_xdp.dataplane.hostinfo import is_veth

METHODS = ("auto", "offload", "software")
PARTIAL = ("auto", "accept", "verify")


@dataclass(frozen=True)
class ChecksumPolicy:
    """What the stages do, with every "auto" already decided.

    method: "offload" writes the pseudo-header seed and asks the kernel with
    AF_XDP TX metadata (Linux >= 6.11); "software" sums the packet here.
    accept_partial: from the uplink, a checksum field holding exactly the
    seed is taken as partial (a veth "wire" of a test host leaves it so).
    """

    method: str = "software"
    accept_partial: bool = False

    def c_method(self) -> int:
        return native.CSUM_OFFLOAD if self.method == "offload" else native.CSUM_SOFTWARE

    def describe(self) -> dict[str, str]:
        how = ("kernel TX metadata (CHECKSUM_PARTIAL, seed written here)" if self.method == "offload"
               else "software (summed here)")
        return {"method": self.method, "how": how,
                "partial_from_uplink": "accept" if self.accept_partial else "verify"}


def kernel_has_tx_metadata() -> bool:
    """Does this kernel take a checksum request with an AF_XDP frame? (One UMEM registration.)"""
    from prism_xdp.dataplane.umem import Umem, UmemParams

    with Umem(UmemParams(frame_count=16, fill_size=16, comp_size=16)) as umem:
        return umem.tx_metadata


def resolve(method: str, partial: str, uplink: str, has_tx_metadata: bool | None = None,
            veth: bool | None = None) -> ChecksumPolicy:
    """Decide every "auto"; refuse what the kernel cannot do."""
    if method not in METHODS:
        raise ConfigError(f"checksum.method: must be one of {', '.join(METHODS)}, not {method!r}")
    if partial not in PARTIAL:
        raise ConfigError(f"checksum.partial_from_uplink: must be one of {', '.join(PARTIAL)}, not {partial!r}")
    if method != "software":
        has = kernel_has_tx_metadata() if has_tx_metadata is None else has_tx_metadata
        if not has and method == "offload":
            raise ConfigError("checksum.method: offload needs AF_XDP TX metadata (Linux >= 6.11); "
                              "this kernel lacks it: use auto or software")
        method = "offload" if has else "software"
    if partial == "auto":
        accept = is_veth(uplink) if veth is None else veth
    else:
        accept = partial == "accept"
    return ChecksumPolicy(method, accept)
