# make demo / make test bootstrap a fresh machine: .venv, the package with [dev], Graphviz's dot.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bootstrap dot gallery bench lint clean

bootstrap: $(STAMP) dot

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# Debian's graphviz provides `dot`; install it when missing (CI runs as root).
dot:
	@command -v dot >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq graphviz >/dev/null; }
	@dot -V

demo: bootstrap
	$(BIN)/python examples/demo.py

test: bootstrap
	$(BIN)/python -m pytest -q -x -n 2 -p no:cacheprovider tests

lint: bootstrap
	$(BIN)/ruff check --select E,F,W,I --ignore E501,E402 tgraph ops backends tests examples benchmarks

gallery: bootstrap
	$(BIN)/python examples/gallery.py

# CPU benchmarks, each printing its ratio against PyTorch (gpu_bench.py needs a GPU)
bench: bootstrap
	for b in executor_overhead autodiff_bench train_step_bench render_bench; do \
	  $(BIN)/python benchmarks/$$b.py || exit 1; done

clean:
	rm -rf $(VENV) build dist *.egg-info
