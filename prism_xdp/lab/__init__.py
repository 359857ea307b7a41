"""prism_xdp.lab - the test bench around the daemon: test hosts in namespaces, traffic, probes, the real-tool A/B, profiling (pip install prism_xdp[lab])."""
