# shellcheck shell=bash disable=SC2154  # part.sh, which sources this file, sets python, expdir, seeds, ...
# mini_synth's own decodes, sourced by part.sh before it parses its options (the hook is described in
# egs/README.md): the controls of the study, all with the first schedule's last stage of each seed.
# The variables below are part.sh options of this recipe only.

# Stage 6
controls=true          # decode with shuffled audio (exp/control_shuffled_audio_seed<k>) and with no audio
                       # (exp/control_none_audio_seed<k>)
output_controls=false  # decode again (free-text tasks) with a re-decode on trouble (exp/redecode_seed<k>)
                       # and with the script mask (exp/script_mask_seed<k>)
longform_sets=""       # test sets whose utterances, joined into long recordings, are decoded long-form
                       # (exp/longform_seed<k>) and one by one (exp/longform_one_by_one_seed<k>):
                       # python -m partlib.bin.decode_longform
longform_args=""       # extra options of partlib.bin.decode_longform

help_message+="
Options of this recipe's own decodes (local/decode_extra.sh):
  --controls true|false   --output_controls true|false
  --longform_sets \"<sets>\"   --longform_args \"...\""

# Sets text_decodes, in the caller's scope, to the entries of part.sh's decodes whose task is free
# text (not lid's closed label set): those the output controls apply to.
set_text_decodes() {
  local free spec
  free=" $(${python} -m partlib.bin.tasks list --scored --free-text | tr '\n' ' ') "
  text_decodes=""
  for spec in ${decodes}; do
    if [[ "${free}" == *" ${spec%%:*} "* ]]; then text_decodes+=" ${spec}"; fi
  done
  text_decodes=${text_decodes# }
}

# A control experiment exp/<ctag> beside exp/<tag>, with its environment record.
control_exp() {  # control_exp <tag> <ctag>
  mkdir -p "${expdir}/$2"
  cp "${expdir}/$1/env.json" "${expdir}/$2/env.json"
}

# Stage 6: the controls of the first schedule's last stage <stage> (model dir <model>), per seed.
decode_extra() {  # decode_extra <schedule> <seed> <stage> <model>
  local sched=$1 seed=$2 last_stage=$3 last_model=$4
  local tag=${sched}_seed${seed} mode ctl ctag dset name text_decodes=""
  [ "${sched}" = "${first_sched}" ] || return 0
  if [ "${controls}" = true ]; then
    for mode in shuffled none; do
      ctag=control_${mode}_audio_seed${seed}
      log "Stage 6: control '${mode}' audio with ${tag}/${last_stage} -> ${expdir}/${ctag}"
      control_exp "${tag}" "${ctag}"
      decode_all "${last_model}" "${expdir}/${ctag}/${last_stage}" "${decodes}" --audio "${mode}" --seed "${seed}"
    done
  fi
  if [ "${output_controls}" = true ]; then set_text_decodes; fi
  if [ -n "${text_decodes}" ]; then
    for ctl in redecode script_mask; do
      ctag=${ctl}_seed${seed}
      log "Stage 6: output control '${ctl}' with ${tag}/${last_stage} -> ${expdir}/${ctag}"
      control_exp "${tag}" "${ctag}"
      decode_all "${last_model}" "${expdir}/${ctag}/${last_stage}" "${text_decodes}" "--${ctl//_/-}"
    done
  fi
  for dset in ${longform_sets}; do
    name=$(${python} -m partlib.bin.tasks decodes "asr:${dset}" | cut -d' ' -f4)
    log "Stage 6: long-form decoding of ${dset} with ${tag}/${last_stage} -> ${expdir}/longform_seed${seed}"
    for ctag in longform_seed${seed} longform_one_by_one_seed${seed}; do
      control_exp "${tag}" "${ctag}"
      mkdir -p "${expdir}/${ctag}/logs"
    done
    # shellcheck disable=SC2086
    ${decode_cmd} "${expdir}/longform_seed${seed}/logs/${name}.log" ${python} -m partlib.bin.decode_longform \
      --model-dir "${last_model}" --data-dir "${data_root}/${dset}" --seed "${seed}" \
      --one-by-one "${expdir}/${tag}/${last_stage}/${name}" ${longform_args} \
      "${expdir}/longform_seed${seed}/${last_stage}/${name}" "${expdir}/longform_one_by_one_seed${seed}/${last_stage}/${name}"
  done
}

# Stage 9: the controls' experiments (after the schedules', in this order) and their RESULTS.md sections.
results_extra() {
  local mode ctl name seed last_stage text_decodes=""
  if [ "${controls}" = true ]; then
    for mode in shuffled none; do for seed in ${seeds}; do exps+=("${expdir}/control_${mode}_audio_seed${seed}"); done; done
  fi
  if [ "${output_controls}" = true ]; then set_text_decodes; fi
  if [ -n "${text_decodes}" ]; then
    last_stage=$(${python} -m partlib.bin.exp models "${expdir}/${first_sched}_seed${seeds%% *}" | tail -n 1 | cut -d' ' -f1)
    for ctl in redecode script_mask; do for seed in ${seeds}; do exps+=("${expdir}/${ctl}_seed${seed}"); done; done
    copts+=(--section "Output control: greedy, re-decoded with beams on trouble, script mask=${first_sched}/${last_stage} redecode script_mask")
  fi
  if [ -n "${longform_sets}" ]; then
    for name in longform_one_by_one longform; do for seed in ${seeds}; do exps+=("${expdir}/${name}_seed${seed}"); done; done
    copts+=(--section "Long-form decoding: test utterances joined into recordings, decoded one by one vs long-form=longform_one_by_one longform")
  fi
}
