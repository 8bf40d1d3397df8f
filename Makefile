# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Re-install whenever the project's declared dependencies change; rebuild the native parts
# whenever their sources change.
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml 2>/dev/null | cksum | cut -d' ' -f1)
NATIVE_SOURCES := setup.py $(wildcard src/callbridge/*/*.c)

# Debian packages that the test suite drives as real peers (installed only when missing).
SYSTEM_PACKAGES ?= ffmpeg espeak-ng tshark chromium libopus0
# What building the native parts needs (pip builds them; without a compiler the Python twins run).
BUILD_PACKAGES ?= gcc libc6-dev

.PHONY: run test lint typecheck bench fuzz system-deps build-deps clean

$(STAMP): pyproject.toml $(NATIVE_SOURCES) | build-deps
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@rm -f $(VENV)/.installed-*
	@touch $@

run: $(STAMP)
	$(BIN)/callbridge serve $(ARGS)

system-deps build-deps: PACKAGES = $(if $(filter build-deps,$@),$(BUILD_PACKAGES),$(SYSTEM_PACKAGES))
system-deps build-deps:
	@missing=""; for p in $(PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

test: $(STAMP) system-deps lint typecheck
	$(BIN)/python -m pytest $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy

# Capacity side by side with rtpengine (installs Debian's rtpengine-daemon if missing), then
# RTVBP calls per worker on the aiohttp and the picows (rtvbp.fast_listen) listener, each next
# to its bare WebSocket echo, then what a phone hears through PCMU <-> Opus on each. Figures
# only; see docs/performance.md.
bench: $(STAMP)
	@test -x $(BIN)/py-spy || $(BIN)/python -m pip install --quiet py-spy  # profile summaries
	$(BIN)/python benchmarks/rtpengine_compare.py $(ARGS)
	$(BIN)/python benchmarks/rtvbp_echo.py
	$(BIN)/python benchmarks/transcode_quality.py

# 10^6 mutated inputs through every parser, then the wire fuzzer against a running server for
# 60 s. CPU heavy; see docs/reliability.md.
fuzz: $(STAMP)
	nice -n 19 $(BIN)/python -m tests.fuzz $(ARGS)
	cd benchmarks && nice -n 19 ../$(BIN)/python wire_fuzz.py --seconds 60

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find src -name "*.so" -delete
