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
	$(VENV)/bin/ruff format --check .

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

# make energy: base and L at 224 px (untrained weights, BatchNorm re-estimated on real training
# clips of the slice, firing measured on real test clips), then the tiny row from the checkpoint
# that `make real` trains. Without the slice, base and L run on synthetic batches (said so).
ENERGY_DATA ?= ../shared/data/ucf101_3cls
# the newest last*.ckpt of `make real`'s fit (a rerun writes last-v1.ckpt beside last.ckpt)
ENERGY_CKPT ?= $(shell ls -t outputs/real/lif_seed0/checkpoints/last*.ckpt 2>/dev/null | head -n 1)
ENERGY_OUT  ?= outputs/energy
ENERGY_ARGS ?= --batches 3 --no-memory --layers
ENERGY_SLICE = --data.root $(ENERGY_DATA)/UCF-101 --data.split_dir $(ENERGY_DATA)/ucfTrainTestlist \
	--data.prepare.width 170 --data.prepare.height 128 --data.num_workers 0 --data.batch_size 2 \
	--data.pin_memory false --trainer.precision 32-true --trainer.accelerator cpu

energy: install
	@if [ -d $(ENERGY_DATA)/UCF-101 ]; then \
	  $(VENV)/bin/csvr energy --config configs/ucf101.yaml --variant-compare --calibrate-bn 4 $(ENERGY_ARGS) \
	    $(ENERGY_SLICE) --json $(ENERGY_OUT)/base_L.json --plot $(ENERGY_OUT)/energy.png; \
	else \
	  echo "no $(ENERGY_DATA)/UCF-101: base and L on synthetic batches (set ENERGY_DATA=...)"; \
	  $(VENV)/bin/csvr energy --config configs/ucf101.yaml --variant-compare $(ENERGY_ARGS) \
	    --json $(ENERGY_OUT)/base_L.json --plot $(ENERGY_OUT)/energy.png; \
	fi
	@if [ -f "$(ENERGY_CKPT)" ]; then \
	  $(VENV)/bin/csvr energy --config configs/ucf101_3cls.yaml --ckpt_path $(ENERGY_CKPT) $(ENERGY_ARGS) \
	    --data.root $(ENERGY_DATA)/UCF-101 --data.split_dir $(ENERGY_DATA)/ucfTrainTestlist \
	    --data.num_workers 0 --data.batch_size 2 --json $(ENERGY_OUT)/tiny.json --plot $(ENERGY_OUT)/tiny.png; \
	else echo "no checkpoint of make real under outputs/real/lif_seed0/checkpoints: run make real first for the tiny row (or ENERGY_CKPT=...)"; fi

clean:
	rm -rf outputs lightning_logs wandb bench/results.json
