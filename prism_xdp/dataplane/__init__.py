"""prism_xdp.dataplane - AF_XDP, the XDP programs, the overlay stages and the schedulers; needs only cffi and the compiled C helpers."""
