"""prism_xdp.lab.bench - the real-tool A/B: configurations, workloads (each tool's command line and parser), placement, the runner, the report, the per-stage breakdown."""
