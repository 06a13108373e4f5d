# The README's commands: `make search` (set up + the main job) and `make test` (set up + the tests).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup data browser search test bench clean

setup: $(VENV)/.installed data

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,onnx,tflite,dashboard]'
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

# The browser tests drive Debian's chromium (headless, no network); without apt-get they are skipped.
browser:
	@if command -v chromium >/dev/null; then \
	  echo "chromium: present"; \
	elif command -v apt-get >/dev/null; then \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; \
	else \
	  echo "chromium not found and no apt-get: the browser tests will be skipped"; \
	fi

search: setup
	$(BIN)/sweeper search fashion --trials 20 --max-epochs 10

test: setup browser
	$(BIN)/python -m pytest

# The benchmark suite (about 90 minutes on 2 cores); figures go to bench/RESULTS.md by hand, with the command.
bench: setup
	$(BIN)/python bench/epoch_speed.py
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/scaling.py
	$(BIN)/python bench/memory.py
	$(BIN)/python bench/quality.py

clean:
	rm -rf $(VENV) build *.egg-info
