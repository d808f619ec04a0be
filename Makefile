# ARIA back — every target is one line; logic lives in the Python modules they call.
# `make help` lists them. ARIA_PROFILE=tiny (default, CPU) or ARIA_PROFILE=medgemma (GPU + Hub token).
SHELL := /bin/bash
PY := .venv/bin/python
STAMP := .venv/.aria-installed
export ARIA_PROFILE ?= tiny
export NO_MKDOCS_2_WARNING := 1
SRC ?=
HEAD ?=
GPUS ?=
ACCELERATE_CONFIG ?=
ACCELERATE_ARGS ?=
REPLICAS ?= 2
ARGS ?=
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install check-gpu datasets copy-datasets dataset-card tiny-model tiny-pretrain convert-base train-sft merge-sft train-dpo train-all gpu-check bench-training serve serve-sft serve-ft serve-ft-bg serve-stop ray-head ray-worker serve-cluster ray-stop grammar-audit health docker-serve docker-serve-ft docker-stop docker-logs docker-replicas docker-replicas-stop benchmark load soak model-card hf-push-model hf-push-datasets doc doc-serve quality style test-fast test demo figures clean

help: ## List every target with what it does
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml scripts/install.py $(wildcard constraints/*.txt)
	python3 -m scripts.install

install: $(STAMP) ## Create .venv with the CPU or GPU engine profile (ENGINE=cpu|gpu overrides)

check-gpu: $(STAMP) ## Report GPU, VRAM, CUDA, bf16 and a ✓/✗ checklist of the engines
	$(PY) -m scripts.check_gpu

datasets: $(STAMP) ## Generate data/training/{sft,sft_extended,dpo}.jsonl and data/eval/{eval,outside}.jsonl (seeded)
	$(PY) -m preparation.generate_datasets $(ARGS)

copy-datasets: $(STAMP) ## Import JSONL datasets from SRC=folder through the same validation
	$(PY) -m preparation.copy_datasets --src "$(SRC)" $(ARGS)

dataset-card: $(STAMP) ## Render data/training/README.md, the Hugging Face dataset card
	$(PY) -m preparation.generate_dataset_card $(ARGS)

tiny-model: $(STAMP) ## Install the committed, pretrained tiny Gemma 3 base in data/models/tiny/base
	$(PY) -m tiny.build $(ARGS)

tiny-pretrain: $(STAMP) ## Rebuild that committed base (tiny/base): random weights, then copying, ranking and describing
	$(PY) -m tiny.build --pretrain $(ARGS)

convert-base: $(STAMP) ## MedGemma (ARIA_BASE_SOURCE: Hub id or folder) → text-only Gemma3ForCausalLM base, parity checked
	$(PY) -m training.convert_base $(ARGS)

train-sft: $(STAMP) ## SFT QLoRA NF4 on the profile's base, then merge to bf16 aria-ft-sft (GPUS=N, ACCELERATE_CONFIG=)
	$(PY) -m training.distributed sft --gpus "$(GPUS)" --accelerate-config "$(ACCELERATE_CONFIG)" --accelerate-args "$(ACCELERATE_ARGS)" -- $(ARGS)

merge-sft: $(STAMP) ## Merge the last SFT adapter into a bf16 base again (with the parity check)
	$(PY) -m training.merge_sft $(ARGS)

train-dpo: $(STAMP) ## DPO QLoRA on aria-ft-sft, then merge to bf16 aria-ft-dpo (production; GPUS=N, ACCELERATE_CONFIG=)
	$(PY) -m training.distributed dpo --gpus "$(GPUS)" --accelerate-config "$(ACCELERATE_CONFIG)" --accelerate-args "$(ACCELERATE_ARGS)" -- $(ARGS)

train-all: train-sft train-dpo ## The whole training chain: SFT then DPO

gpu-check: $(STAMP) ## Every medgemma stage on this GPU (twin, then MedGemma 4B's dims): time + peak memory
	$(PY) -m scripts.gpu_check $(ARGS)

bench-training: $(STAMP) ## Tokens/s, s/step and peak memory of the SFT step (table + JSON)
	$(PY) -m training.bench_training $(ARGS)

serve: $(STAMP) ## vLLM server on the profile's base model (foreground)
	$(PY) -m serve.vllm_server --stage base $(ARGS)

serve-sft: $(STAMP) ## vLLM server on aria-ft-sft (validation)
	$(PY) -m serve.vllm_server --stage aria-ft-sft $(ARGS)

serve-ft: $(STAMP) ## vLLM server on aria-ft-dpo (production)
	$(PY) -m serve.vllm_server --stage aria-ft-dpo $(ARGS)

serve-ft-bg: $(STAMP) ## vLLM server on aria-ft-dpo in the background: returns once /health answers
	$(PY) -m serve.vllm_server --stage aria-ft-dpo --background $(ARGS)

serve-stop: $(STAMP) ## Stop the local vLLM server started by a serve target
	$(PY) -m serve.vllm_server --stop

ray-head: $(STAMP) ## Start the Ray head of a multi-node server (on the head node)
	$(PY) -m serve.cluster head

ray-worker: $(STAMP) ## Join this node to the Ray head at HEAD=<ip> (on each other node)
	$(PY) -m serve.cluster worker --address "$(HEAD)"

serve-cluster: $(STAMP) ## vLLM on aria-ft-dpo over the Ray cluster (TP per node × PP nodes)
	$(PY) -m serve.cluster serve --stage aria-ft-dpo

ray-stop: $(STAMP) ## Leave or end the Ray cluster on this node
	$(PY) -m serve.cluster stop

grammar-audit: $(STAMP) ## Can the served model write its answers? xgrammar's mask over aria-ft-dpo's tokens (no server)
	$(PY) -m serve.grammar_audit $(ARGS)

health: $(STAMP) ## /health, then a guided diagnostic with each body (the seed's verbatim, the project's)
	$(PY) -m serve.health $(ARGS)

docker-serve: $(STAMP) ## Docker (official vLLM image) on the base model
	$(PY) -m serve.docker --stage base up

docker-serve-ft: $(STAMP) ## Docker (official vLLM image) on aria-ft-dpo
	$(PY) -m serve.docker --stage aria-ft-dpo up

docker-stop: $(STAMP) ## Stop the Docker container
	$(PY) -m serve.docker stop

docker-logs: $(STAMP) ## Follow the Docker container's logs
	$(PY) -m serve.docker logs

docker-replicas: $(STAMP) ## REPLICAS=N copies of aria-ft-dpo in Docker, each on its own GPUs, behind nginx
	$(PY) -m serve.docker --stage aria-ft-dpo --replicas $(REPLICAS) compose-up

docker-replicas-stop: $(STAMP) ## Stop the replicas and their nginx
	$(PY) -m serve.docker compose-down

benchmark: $(STAMP) ## Latency + quality of the served models, both bodies and both eval sets, against the release gate
	$(PY) -m scripts.benchmark $(ARGS)

load: $(STAMP) ## Capacity of the live server with vllm bench serve: Poisson rate sweep, highest rate under the SLO
	$(PY) -m evaluation.load $(ARGS)

soak: $(STAMP) ## Bounded soak of the live server (e.g. 2000 requests at concurrency 32)
	$(PY) -m evaluation.soak $(ARGS)

model-card: $(STAMP) ## Render the model cards of aria-ft-sft and aria-ft-dpo with the latest benchmark
	$(PY) -m publishing.generate_model_card $(ARGS)

hf-push-model: $(STAMP) ## Push aria-ft-dpo and its card to HF_MODEL_REPO (--dry-run in ARGS)
	$(PY) -m publishing.hf_push model $(ARGS)

hf-push-datasets: $(STAMP) ## Push data/training and its card to HF_DATASET_REPO (--dry-run in ARGS)
	$(PY) -m publishing.hf_push datasets $(ARGS)

doc: $(STAMP) ## Build the docs site into site/ (mkdocs --strict)
	$(PY) -m mkdocs build --strict --site-dir site

doc-serve: $(STAMP) ## Serve the docs with live reload on localhost:8080
	$(PY) -m mkdocs serve --dev-addr localhost:8080

quality: $(STAMP) ## ruff check and ruff format --check
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

style: $(STAMP) ## Fix what ruff can fix and format the code
	$(PY) -m ruff check --fix . && $(PY) -m ruff format .

test-fast: $(STAMP) ## Tests that run no engine (milliseconds to seconds)
	$(PY) -m pytest -m "not engine and not live and not gpu" $(PYTEST_ARGS)

test: $(STAMP) ## Every test: quality, docs build, pure tests and the engines on the tiny model
	$(PY) -m scripts.run_tests $(PYTEST_ARGS)

demo: $(STAMP) ## The whole chain on the tiny profile: data → train → serve → benchmark
	$(PY) -m scripts.demo $(ARGS)

figures: $(STAMP) ## README.md's figures table from the last benchmark and demo's stage times (docs/figures.json)
	$(PY) -m scripts.figures $(ARGS)

clean: ## Remove generated data, models, reports and the docs site (keeps .venv)
	rm -rf data/training data/eval data/models data/checkpoints data/logs data/run reports site
