#!/usr/bin/env bash
# Run a Slurm job step; requeue the job when the step stopped for preemption.
#
#   utils/srun_requeue.sh [srun options] CMD ARGS...
#
# Meant for the batch script of a long training (egs/README.md, "Preemption and requeue"):
#   #SBATCH --requeue --open-mode=append --signal=USR1@120
#   utils/srun_requeue.sh --ntasks-per-node=8 python -m partlib.bin.train ...
# Runs "srun ARGS..." and waits for it. A step that ends with status 75 (EX_TEMPFAIL: training
# stopped on SIGTERM or SIGUSR1 after writing a checkpoint) has the job requeued with
# "scontrol requeue $SLURM_JOB_ID"; started again, the same command resumes from that checkpoint.
# Any other status is passed on. The batch shell outlives the SIGTERM Slurm sends to every
# process of the job, so that it can still requeue.
set -u
trap 'echo "srun_requeue.sh: stop signal received; waiting for the step to checkpoint" >&2' TERM USR1
srun "$@" &
pid=$!
while :; do
  wait "$pid"
  status=$?
  kill -0 "$pid" 2>/dev/null || break  # wait was cut short by a signal: the step still runs
done
if [ "$status" -eq 75 ]; then
  echo "srun_requeue.sh: the step stopped with status 75 (preempted): requeueing job ${SLURM_JOB_ID:-?}" >&2
  scontrol requeue "${SLURM_JOB_ID:?srun_requeue.sh: not inside a Slurm job}" || exit 75
  exit 0
fi
exit "$status"
