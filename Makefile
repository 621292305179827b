# The two commands a newcomer needs: `make demo` and `make test`. Both install what is missing.
JOBS ?= $(shell nproc)
# Seconds per fuzz target in `make fuzz` and `make test`: long enough to run every seed and explore
# a little; FUZZ_SECONDS=600 for a real search.
FUZZ_SECONDS ?= 15
# ccache (when installed) shares objects between the presets' trees, `pip install .` and other
# checkouts: paths relative to the checkout, the build folder left out of the hash.
export CCACHE_BASEDIR := $(CURDIR)
export CCACHE_NOHASHDIR := 1

.PHONY: all deps system-deps release asan fuzz-build demo test test-release test-asan test-python test-install test-pip fuzz bench clean
.PHONY: run-test-asan run-fuzz test-asan-fuzz

all: release

deps:
	@scripts/install-deps

# What a C++ build needs (the Debian packages); the venv is for the release tree's Python
# extension and for tests that make fixtures with PyTorch and friends.
system-deps:
	@scripts/install-deps --system

release: deps
	@cmake --preset release >/dev/null
	@cmake --build --preset release -j $(JOBS)

asan: system-deps
	@cmake --preset asan >/dev/null
	@cmake --build --preset asan -j $(JOBS)

# The fuzz targets live in the asan tree (clang, the same instrumented library objects as the tests).
fuzz-build: system-deps
	@cmake --preset asan >/dev/null
	@cmake --build --preset asan -j $(JOBS) --target fuzzers

demo: release
	@examples/demo.sh

test-release: release
	ctest --preset release -j $(JOBS)

test-asan: asan
	@$(MAKE) --no-print-directory run-test-asan

# The tests alone, without the build step (for `make test`, which builds first). Some make their
# fixtures with the venv's PyTorch, transformers and huggingface_hub.
run-test-asan: deps
	ctest --preset asan -j $(JOBS)

# The Python package from the release tree (build/release/python), with the pinned .venv.
test-python: release
	PYTHONPATH=build/release/python .venv/bin/python -m pytest -q -p no:cacheprovider tests/python $(PYTEST_ARGS)

fuzz: fuzz-build
	@$(MAKE) --no-print-directory run-fuzz

run-fuzz:
	@scripts/run-fuzzers $(FUZZ_SECONDS)

# A project outside the tree builds against `cmake --install` output: CMake package and pkg-config.
test-install: release
	@rm -rf build/install build/consumer build/consumer-local
	@cmake --install build/release --prefix build/install >/dev/null
	@cmake -S examples/consumer -B build/consumer -G Ninja -DCMAKE_PREFIX_PATH=$(CURDIR)/build/install >/dev/null
	@MAKEFLAGS= cmake --build build/consumer >/dev/null
	@build/consumer/consumer build/consumer/out
	@cmake -S examples/consumer -B build/consumer-local -G Ninja -DCMAKE_PREFIX_PATH=$(CURDIR)/build/install \
	  -Wno-unused-cli -DLOCAL_ONLY=ON -DCMAKE_DISABLE_FIND_PACKAGE_CURL=ON -DCMAKE_DISABLE_FIND_PACKAGE_OpenSSL=ON >/dev/null
	@MAKEFLAGS= cmake --build build/consumer-local >/dev/null
	@build/consumer-local/consumer build/consumer-local/out
	@PKG_CONFIG_PATH=$(CURDIR)/build/install/lib/pkgconfig $(CXX) -o build/consumer/consumer-pc \
	  examples/consumer/main.cpp $$(PKG_CONFIG_PATH=$(CURDIR)/build/install/lib/pkgconfig pkg-config --cflags --libs ckptio)
	@build/consumer/consumer-pc build/consumer/out-pc

# pip wheel + a fresh venv, the way a user installs the package (scripts/check-pip-install).
test-pip: release
	@scripts/check-pip-install

# One parallel make from the start: the release and asan builds run side by side (two trees, so
# two ninjas may), and each tree's tests start as soon as that tree is built: the release tests,
# pytest (one process), the install and pip checks (mostly waiting on subprocesses, the network
# and the linker) after the release build; the asan tests beside the fuzzers after the asan build.
# No core idles while one build links or one test waits, and the asan chain, the longest, starts
# at once instead of after the release build.
# test-asan-fuzz: one build of the asan tree, then its tests and the fuzzers side by side (two
# builds of one tree must not run at once).
test: system-deps
	@$(MAKE) --no-print-directory -j 6 --output-sync=target test-asan-fuzz test-release test-python test-install test-pip

test-asan-fuzz: asan
	@$(MAKE) --no-print-directory -j 2 --output-sync=target run-test-asan run-fuzz

# BENCH_ARGS=--quick for a short run. The libtorch peer is not part of the default build. Reports
# go to BENCH_OUT (<program>.{json,md}), charts beside them when matplotlib is installed.
# BENCH_REPEAT: runs per figure, the median reported (on a VM a single write or fresh-memory
# figure can be off by 10-30%, so the default takes five).
BENCH_OUT ?= build/bench-results
BENCH_REPEAT ?= 5
BENCH_PYTHON ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)
bench: release
	@cmake --build --preset release -j $(JOBS) --target ckptio-bench-libtorch-peer 2>/dev/null || true
	@for b in ckptio-bench-safetensors ckptio-bench ckptio-bench-torch ckptio-bench-sharded ckptio-bench-checkpoint; do \
	  if [ -x build/bin/$$b ]; then echo "== $$b"; build/bin/$$b --out $(BENCH_OUT) --repeat $(BENCH_REPEAT) $(BENCH_ARGS) || exit 1; fi; \
	done
	@echo "== ckptio-bench-dist-plan"; build/bin/ckptio-bench-dist-plan
	@if [ -x build/bin/ckptio-bench-dist-io ]; then echo "== ckptio-bench-dist-io"; \
	  build/bin/ckptio-bench-dist-io --out $(BENCH_OUT) --repeat $(BENCH_REPEAT) $(BENCH_ARGS) || exit 1; fi
	@mkdir -p $(BENCH_OUT)/python
	@for p in safetensors checkpoint dist; do echo "== bench/python/bench_$$p.py"; \
	  if [ $$p = safetensors ]; then runs=--repeat; else runs=--runs; fi; \
	  PYTHONPATH=build/release/python .venv/bin/python bench/python/bench_$$p.py $$runs $(BENCH_REPEAT) \
	    $(if $(findstring --quick,$(BENCH_ARGS)),--quick,) --out $(BENCH_OUT)/python/$$p.json || exit 1; \
	done
	@$(BENCH_PYTHON) bench/plot_results.py $(BENCH_OUT) || echo "(charts skipped)"

clean:
	rm -rf build
