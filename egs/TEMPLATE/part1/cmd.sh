# How the recipe runs jobs (Kaldi/ESPnet convention). Every *_cmd takes
#   <cmd> [--mem 4G] [--gpu N] [--num-threads N] [JOB=1:N] LOG COMMAND...
# Local machine (default):
export train_cmd="utils/run.pl"
export cuda_cmd="utils/run.pl"
export decode_cmd="utils/run.pl"
# Slurm cluster: uncomment and adapt conf/slurm.conf (partition, account, ...):
# export train_cmd="utils/slurm.pl --config conf/slurm.conf"
# export cuda_cmd="utils/slurm.pl --config conf/slurm.conf --gpu 1"
# export decode_cmd="utils/slurm.pl --config conf/slurm.conf"
