# csvr: the whole set-up is `make demo` and `make test` (see README).
#
# Why install is two steps: spikingjelly 2.0.0 declares torchvision, torchaudio,
# tensorboard, h5py and SciencePlots as hard requirements. csvr uses only its
# activation_based neurons, surrogates, layers, functional and op_counter, which import
# with loguru, packaging and tqdm alone. A plain `pip install spikingjelly` pulls a
# torchvision that replaces torch==2.13.0 (and torchvision does not import beside the
# CPU build). So: pinned requirements first (torch==2.13.0 takes the local CPU build),
# then spikingjelly and csvr itself with --no-deps. `pip check` therefore reports
# spikingjelly's undeclared extras; that is expected and not part of CI.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.csvr-installed

.PHONY: install lint format test test-quick demo bench real real-ablation noise lif-response energy clean help

help:
	@echo "make demo   - create .venv, install, train the tiny model on the synthetic dataset (CPU)"
	@echo "make test   - lint, then run the whole test suite (what CI runs)"
	@echo "make test-quick - the suite without the tests marked slow (pytest -m 'not slow')"
	@echo "make lint   - ruff check (the rules are in pyproject.toml)"
	@echo "make bench  - data and model benchmarks -> bench/results.json"
	@echo "make real   - prepare the UCF-101 3-class slice, fit, test, print metrics and energy"
	@echo "make real-ablation - the ablation table on the slice (I-only, LIF, ConvGRU, conv)"
	@echo "make noise  - the noise-robustness experiment (LIF vs ConvGRU vs conv)"
	@echo "make lif-response - the LIF temporal-sensitivity figures"
	@echo "make energy - per-layer energy of base and L, and prior art"

install: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.txt -r requirements-dev.txt
	$(PIP) install -q --no-deps spikingjelly==2.0.0
	$(PIP) install -q --no-deps -e .
	$(PY) -c "import torch, spikingjelly.activation_based.neuron, av, lightning; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $(STAMP)

lint: install
	$(VENV)/bin/ruff check .

# Formats in place; not part of lint until the whole tree has been formatted once.
format: install
	$(VENV)/bin/ruff format .

test: lint
	$(PY) -m pytest -q tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "ERROR: pytest collected no tests"; exit 1; fi; exit $$rc

test-quick: install
	$(PY) -m pytest -q -m "not slow" tests

demo: install
	$(PY) scripts/demo.py

bench: install
	$(PY) bench/run.py

real: install
	$(PY) scripts/real.py

real-ablation: install
	$(PY) scripts/real.py --ablation

noise: install
	$(VENV)/bin/csvr experiment noise --config configs/noise.yaml --out outputs/noise

lif-response: install
	$(VENV)/bin/csvr lif-response --out outputs/lif_response.png --sweep-out outputs/lif_sweep.png

energy: install
	$(VENV)/bin/csvr energy --config configs/ucf101.yaml --variant-compare --json outputs/energy.json --plot outputs/energy.png

clean:
	rm -rf outputs lightning_logs wandb bench/results.json
