# Makefile - shortcuts for developers; README's two commands are tools/run-demo.sh and tools/run-tests.sh.
.PHONY: setup demo test unit lint format bench bench-xsk bench-classifier bench-overlay bench-sched bench-perf bench-checksum bench-scale ab clean

setup:
	bash tools/setup.sh

demo:
	bash tools/run-demo.sh

test:
	bash tools/run-tests.sh

unit:
	.venv/bin/python -m pytest tests/unit

# C in kernel style (.clang-format); a missing clang-format fails lint rather than passing it.
C_SOURCES = $(wildcard ffi/*.c ffi/*.h xdp_progs/*.c xdp_progs/*.h)
CLANG_FORMAT = clang-format

lint:
	.venv/bin/ruff check prism_xdp tests tools ffi setup.py
	.venv/bin/mypy prism_xdp
	@command -v $(CLANG_FORMAT) >/dev/null || { echo "lint: $(CLANG_FORMAT) not found (Debian package clang-format; tools/setup.sh installs it)" >&2; exit 1; }
	$(CLANG_FORMAT) --dry-run --Werror $(C_SOURCES)

format:
	.venv/bin/ruff format prism_xdp tests tools ffi setup.py
	$(CLANG_FORMAT) -i $(C_SOURCES)

bench: bench-xsk bench-classifier bench-overlay bench-sched bench-perf bench-checksum bench-scale

bench-xsk:
	.venv/bin/python tools/bench_xsk.py

clean:
	rm -rf build *.egg-info prism_xdp/_prism_ffi.* prism_xdp/bpf/*.o

bench-classifier:
	.venv/bin/python tools/bench_classifier.py

bench-overlay:
	.venv/bin/python tools/bench_overlay.py

bench-sched:
	.venv/bin/python tools/bench_sched.py

bench-perf:
	.venv/bin/python tools/bench_perf.py

bench-checksum:
	.venv/bin/python tools/bench_checksum.py

bench-scale:
	.venv/bin/python tools/bench_scale.py

ab:
	.venv/bin/prism-xdp bench
