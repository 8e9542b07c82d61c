#!/usr/bin/env bash
# Stage 4 of mini_synth: the pretrained models that PART starts from, made by the recipe itself.
#   1. a byte-level BPE tokenizer (Qwen2.5's special tokens and ChatML template) on training text;
#   2. a tiny Qwen2-architecture LLM pretrained on training text only (every language, plain and
#      "continue this text" samples, X<->en translation pairs) — it fails if any dev/test sentence
#      occurs in its training text;
#   3. a Whisper-architecture encoder pretrained with character CTC on the training speech of all
#      languages (what a pretrained Whisper brings: acoustic representations, no LLM alignment).
# With --nj 2 the LLM and the encoder are pretrained at the same time, one CPU thread each.
set -euo pipefail

data_root=dump/raw   # data dirs after stage 2/3 (speech sets)
datadir=data         # data dirs of stage 1 (text-only sets)
train_sets=""
dev_sets=""
test_sets=""
conf=conf            # directory with lm_pretrain.yaml and encoder_pretrain.yaml
out=exp/pretrained
vocab_size=1200
model_config=conf/model.yaml  # its prompt templates are part of the tokenizer's training text
tokenizer_tasks=""   # comma-separated tasks whose instructions the tokenizer learns (default: all)
nj=1                 # 2: pretrain the LLM and the encoder at once
python=python3

. utils/parse_options.sh

speech_train=(); text_train=(); heldout=()
for s in ${train_sets}; do
  if [ -f "${datadir}/${s}/wav.scp" ]; then speech_train+=("${data_root}/${s}"); else text_train+=("${datadir}/${s}"); fi
done
for s in ${dev_sets} ${test_sets}; do heldout+=("${datadir}/${s}"); done
for d in "${datadir}"/text_dev_* "${datadir}"/text_test_*; do [ -d "${d}" ] && heldout+=("${d}"); done
dev_speech=(); for s in ${dev_sets}; do dev_speech+=("${data_root}/${s}"); done
dev_text=(); for d in "${datadir}"/text_dev_*; do [ -d "${d}" ] && dev_text+=("${d}"); done
[ ${#text_train[@]} -gt 0 ] || { echo "$0: no text-only training sets among: ${train_sets}" >&2; exit 1; }

mkdir -p "${out}"
if [ ! -f "${out}/tokenizer/tokenizer.json" ]; then
  ${python} -m partlib.bin.train_tokenizer --vocab-size "${vocab_size}" --model-config "${model_config}" \
    --prompt-weight 20 ${tokenizer_tasks:+--tasks "${tokenizer_tasks}"} "${text_train[@]}" "${out}/tokenizer"
fi
threads=0; [ "${nj}" -ge 2 ] && threads=1
pids=()
if [ ! -f "${out}/llm/config.json" ]; then
  ${python} -m partlib.bin.pretrain_lm --tokenizer "${out}/tokenizer" --data "${text_train[@]}" \
    --dev "${dev_text[@]}" --check-heldout "${heldout[@]}" --config "${conf}/lm_pretrain.yaml" \
    --threads "${threads}" "${out}/llm" &
  pids+=($!)
  [ "${nj}" -ge 2 ] || { wait "${pids[-1]}"; pids=(); }
fi
${python} -m partlib.bin.pretrain_encoder --arch conf/encoder_arch.json --train "${speech_train[@]}" \
  --dev "${dev_speech[@]}" --config "${conf}/encoder_pretrain.yaml" --threads "${threads}" "${out}/encoder" &
pids+=($!)
for pid in "${pids[@]}"; do wait "${pid}"; done
