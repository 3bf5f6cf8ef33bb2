# make demo / make test bootstrap a fresh machine: .venv, the package with [dev], Graphviz's dot.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-onnx-dynamo test-matrix bootstrap dot chromium gallery bench lint clean fuzz

bootstrap: $(STAMP) dot chromium

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

# Debian's chromium for the viewer's browser tests (Playwright drives it; its own browser
# download is not used). If it cannot be installed, those tests skip saying why.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; } \
	  || echo "chromium could not be installed: the browser tests will skip"

demo: bootstrap
	$(BIN)/python examples/demo.py

test: bootstrap
	$(BIN)/python -m pytest -q -x -n 2 -p no:cacheprovider tests

# The suite under other CPUs and thread counts emulated on this one: torch's scalar kernels,
# NumPy without its AVX2 (x86-64-v3) dispatch, one BLAS/OpenMP thread. A tolerance tied to the
# host fails here before it fails on CI's machine.
MATRIX := "" "ATEN_CPU_CAPABILITY=default" "NPY_DISABLE_CPU_FEATURES=X86_V3" \
	"OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1" "TGRAPH_BLAS=openblas"
test-matrix: bootstrap
	@for e in $(MATRIX); do echo "== make test with $${e:-the default environment}"; \
	  env $$e $(BIN)/python -m pytest -q -x -n 2 -p no:cacheprovider tests || exit 1; done

# ONNX import of a torch.export-based export (20-40 s of export alone; not in make test)
test-onnx-dynamo: bootstrap
	TGRAPH_ONNX_DYNAMO=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_onnx_import.py -k dynamic

# The hostile-input fuzzer beyond make test's 1,000-case sample: N seeded cases (mutated
# graph and weights files, hostile arguments and names), counts of each outcome printed;
# exit 1 on any traceback, hang, partial file, file outside the output, or injection.
N ?= 10000
JOBS ?= 2
fuzz: bootstrap
	cd tests && ../$(BIN)/python fuzzing.py --n $(N) --jobs $(JOBS)

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
