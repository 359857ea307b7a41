"""prism_xdp.lab.testhost - test hosts in network namespaces: the netns/veth primitives, a veth pair host, the overlay host with a kernel VXLAN remote, and the saved topology of `prism-xdp topo`."""
