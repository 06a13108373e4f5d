# The README's commands: `make search` (set up + the main job) and `make test` (set up + the tests).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup data test-tools search test bench clean

setup: $(VENV)/.installed data

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,onnx,tflite,dashboard,postgres,cluster]'
	touch $@

# Fashion-MNIST comes from Debian's dataset-fashion-mnist package when it is not already here.
data:
	@if [ -f "$$SWEEPER_DATA_DIR/fashion-mnist/train-images-idx3-ubyte.gz" ] || [ -f $(FASHION_MNIST) ]; then \
	  echo "Fashion-MNIST: present"; \
	elif command -v apt-get >/dev/null; then \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq dataset-fashion-mnist; \
	else \
	  echo "Fashion-MNIST not found and no apt-get: put the four IDX .gz files in \$$SWEEPER_DATA_DIR/fashion-mnist/"; \
	fi

# What the tests start for real, from Debian's packages: headless chromium (browser tests) and PostgreSQL
# (a throwaway cluster on 127.0.0.1 for the multi-worker tests). Without apt-get those tests are skipped.
test-tools:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -z "$$missing" ]; then \
	  echo "chromium, postgresql: present"; \
	elif command -v apt-get >/dev/null; then \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	else \
	  echo "missing:$$missing and no apt-get: the tests that need them will be skipped"; \
	fi

search: setup
	$(BIN)/sweeper search fashion --timeout 15m

# Three pytest workers on two cores: the suite's processes wait on each other (signals, servers, a second
# process, a worker's TensorFlow import) for much of their time, so a third keeps both cores busier (the same
# tests: 19.5 min on three workers against 24.3 on two, the same day; 14.5-19.2 min lately; README, "Measured").
TEST_WORKERS ?= 3

test: setup test-tools
	$(BIN)/ruff check sweeper tests bench
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal --durations 20

# The benchmark suite (about 2 hours on 2 cores); figures go to bench/RESULTS.md by hand, with the command.
bench: setup
	$(BIN)/python bench/epoch_speed.py
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/scaling.py
	$(BIN)/python bench/memory.py
	$(BIN)/python bench/quality.py
	$(BIN)/python bench/refine.py
	$(BIN)/python bench/lr_range.py
	$(BIN)/python bench/ceiling.py

clean:
	rm -rf $(VENV) build *.egg-info
