#!/usr/bin/env bash
# Publish a finished run with the recipe: copy the scoring files of exp/ (hypotheses, references,
# scores, env.json, config.yaml; no weights, checkpoints or logs), the encoder's CTC pretraining
# report, the training curves of the first seed, the error breakdown, one seed's representation
# analysis and the stage-11 demo subtitles into results/, then regenerate RESULTS.md from results/
# alone, with the preset's targets (${conf}/targets). With --time_log, the reports of GNU time
# (command, wall time, peak memory; one per command of the run, space-separated) are kept as
# results/time<i>.log and shown. --regenerate true only rewrites --results_md from results/ ("-":
# stdout; test/test_mini_synth_results.py checks that RESULTS.md regenerates byte-identically).
#
#   /usr/bin/time -v -o exp/time.log ./run.sh --seeds "1 2 3"
#   local/publish_results.sh --seeds "1 2 3" --time_log exp/time.log
set -euo pipefail

seeds="1 2 3"       # the seeds of the committed RESULTS.md
analysis_seed=1      # the seed whose analysis report (with its plots) is committed and linked
exp=exp
out=results
schedules="part baseline_2stage"   # run.sh's default systems
controls="control_shuffled_audio control_none_audio"
output_controls="redecode script_mask"
longform="longform_one_by_one longform"
compare="part/s4_text:baseline_2stage/s2_enc_all"
time_log=""          # outputs of /usr/bin/time -v for the run (may be mixed with the run's own output)
conf=conf            # the preset's config dir: its targets file is listed in RESULTS.md
regenerate=false     # true: copy nothing, rewrite --results_md from results/
results_md=RESULTS.md
python=python3

. ./path.sh
. utils/parse_options.sh

if [ "${regenerate}" != true ]; then
  tmp=${out}.tmp
  rm -rf "${tmp}"
  mkdir -p "${tmp}"
  for name in ${schedules} ${controls} ${output_controls} ${longform}; do
    for seed in ${seeds}; do
      tag=${name}_seed${seed}
      src=${exp}/${tag}
      [ -f "${src}/env.json" ] || { echo "$0: ${src} is not a finished experiment (no env.json)" >&2; exit 1; }
      mkdir -p "${tmp}/${tag}"
      cp "${src}/env.json" "${tmp}/${tag}/"
      [ -f "${src}/config.yaml" ] && cp "${src}/config.yaml" "${tmp}/${tag}/"
      for d in "${src}"/*/decode_*; do
        dst=${tmp}/${tag}/${d#"${src}"/}
        mkdir -p "${dst}"
        for f in hyp ref scores.json scores.md utt2lang tgt_lang decode.json troubles segments; do
          [ -f "${d}/${f}" ] && cp "${d}/${f}" "${dst}/"
        done
      done
    done
  done
  analysis=${exp}/analysis_seed${analysis_seed}
  mkdir -p "${tmp}/analysis_seed${analysis_seed}"
  cp -r "${analysis}/analysis.md" "${analysis}/metrics.json" "${analysis}/plots" "${tmp}/analysis_seed${analysis_seed}/"
  mkdir -p "${tmp}/demo"
  cp "${exp}"/demo/*.srt "${exp}"/demo/*.txt "${tmp}/demo/"
  mkdir -p "${tmp}/pretrained/encoder" "${tmp}/curves"
  cp "${exp}/pretrained/encoder/ctc_pretrain.json" "${tmp}/pretrained/encoder/"
  cp "${exp}"/curves/curves.md "${exp}"/curves/*.png "${tmp}/curves/"
  cp "${exp}/error_breakdown.md" "${tmp}/"
  i=0
  for log in ${time_log}; do
    i=$((i + 1))
    sed -n '/Command being timed:/,/Exit status:/p' "${log}" > "${tmp}/time${i}.log"
  done
  rm -rf "${out}"
  mv "${tmp}" "${out}"
fi

# the order of part.sh's stage 9 (the controls from local/decode_extra.sh's results_extra): schedules x seeds,
# then controls, output controls, long form x seeds
tags=()
for name in ${schedules} ${controls} ${output_controls} ${longform}; do
  for seed in ${seeds}; do tags+=("${out}/${name}_seed${seed}"); done
done
copts=()
for log in "${out}"/time*.log; do
  if [ -f "${log}" ]; then copts+=(--time-log "${log}"); fi
done
# the targets' file sources are relative to exp/, their copies to results/
if [ -f "${conf}/targets" ]; then
  for t in $(grep -v "^#" "${conf}/targets" || true); do
    case "${t#*=}" in *.json:*) t="${t%%=*}=${out}/${t#*=}" ;; esac
    copts+=(--target "${t}")
  done
fi
for pair in ${compare}; do copts+=(--compare "${pair}"); done
demo=$(cd "${out}/demo" && ls ./*.srt)
${python} -m partlib.bin.results --seeds "${copts[@]}" \
  --section "Output control: greedy, re-decoded with beams on trouble, script mask=part/s4_text ${output_controls}" \
  --section "Long-form decoding: test utterances joined into recordings, decoded one by one vs long-form=${longform}" \
  --link "Seed ${analysis_seed}: language-specific vs shared representations=${out}/analysis_seed${analysis_seed}/analysis.md" \
  --link "Stage 11 demo: subtitles of a long recording (test_en, seed 1)=${out}/demo/${demo#./}" \
  --link "Training curves of every schedule (seed ${seeds%% *})=${out}/curves/curves.md" \
  --link "Where the error comes from: encoder CTC alone, LLM on text alone, the systems (seed ${seeds%% *})=${out}/error_breakdown.md" \
  --out "${results_md}" "${tags[@]}"
echo "$0: ${results_md} written from ${out}/" >&2
