#!/usr/bin/env bash
# Run a Slurm job step; requeue the job when the step stopped for preemption.
#
#   utils/srun_requeue.sh [srun options] CMD ARGS...
#
# Meant for the batch script of a long training (egs/README.md, "Preemption and requeue"):
#   #SBATCH --requeue --open-mode=append --signal=USR1@120
#   exec utils/srun_requeue.sh --ntasks-per-node=8 python -m partlib.bin.train ...
# ("exec": the batch shell itself must outlive Slurm's SIGTERM.) Runs "srun --kill-on-bad-exit=1
# ARGS..." (a rank that fails ends the others, instead of leaving them waiting in a collective) and
# waits for it. A step that ends with status 75 (EX_TEMPFAIL: training
# stopped on SIGTERM or SIGUSR1 after writing a checkpoint) has the job requeued with
# "scontrol requeue $SLURM_JOB_ID"; started again, the same command resumes from that checkpoint.
# Any other status is passed on. The batch shell outlives the SIGTERM Slurm sends to every
# process of the job, so that it can still requeue.
set -u
trap 'echo "srun_requeue.sh: stop signal received; waiting for the step to checkpoint" >&2' TERM USR1
srun --kill-on-bad-exit=1 "$@" &
pid=$!
while kill -0 "$pid" 2>/dev/null; do
  wait "$pid"  # cut short by a trapped signal while the step still runs: wait again
done
wait "$pid"  # the status of the finished step (bash keeps it once reaped)
status=$?
if [ "$status" -eq 75 ]; then
  echo "srun_requeue.sh: the step stopped with status 75 (preempted): requeueing job ${SLURM_JOB_ID:-?}" >&2
  scontrol requeue "${SLURM_JOB_ID:?srun_requeue.sh: not inside a Slurm job}" || exit 75
  exit 0
fi
exit "$status"
