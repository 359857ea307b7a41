"""prism_xdp - PRISM flow prioritization for container overlays, in user space over AF_XDP."""

__version__ = "0.1.0"
