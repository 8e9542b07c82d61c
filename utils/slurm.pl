#!/usr/bin/env perl
# Run a command, or an array of jobs, on a Slurm cluster: the twin of utils/run.pl.
#
#   utils/slurm.pl [options] LOG CMD ARGS...
#   utils/slurm.pl [options] JOB=1:N LOG.JOB.log CMD ARGS...
#
# Submits one Slurm array job (sbatch --wait --array=A-B[%M]) whose task i runs
# "utils/run.pl JOB=i LOG CMD ARGS..." in the current directory, so logs, JOB substitution and
# quoting are exactly run.pl's. Waits for the array, then reads the exit code from each log:
# exit status 0 when every job succeeded, else the failed logs are named and the status is 1.
# A job that ended with status 75 (EX_TEMPFAIL: training stopped on the cluster's SIGTERM or
# SIGUSR1 after writing a checkpoint) is submitted again, up to --max-requeue times, and resumes.
# For a warning before the time limit put "--signal=B:USR1@300" in a rule of the config (the
# recipes' conf/slurm.conf: the gpu rule): the batch shell (run.pl) passes it on to the command.
# The generated batch script and Slurm's own output files go to <dir of LOG>/q/.
#
# Options (before or after JOB=...); each maps to sbatch options through rules:
#   --mem M            --mem=M                    (--mem 0: nothing)
#   --num-threads N    --cpus-per-task=N          (--num-threads 1: nothing)
#   --gpu N            --gres=gpu:N               (--gpu 0: nothing)
#   --time T           --time=T
#   --max-jobs-run N   at most N tasks at once (--array=A-B%N)
#   --max-requeue N    submit a preempted job (status 75) again at most N times (default 10)
#   --config FILE      more rules, in the format below; they extend and override the built-in ones
#
# Config format (like Kaldi's conf/slurm.conf), one rule a line, "#" starts a comment:
#   command sbatch --export=ALL --partition=cpu    # the submit command and its fixed options
#   option gpu=* --partition=gpu --gres=gpu:$0     # any value; $0 is replaced by the value
#   option gpu=0                                   # this exact value: add nothing
#   default gpu=1                                  # value used when the option is not given
# An option with no rule is an error.
use strict;
use warnings;
use Cwd qw(getcwd abs_path);
use File::Basename qw(basename dirname);
use File::Path qw(make_path);

sub fail {
  print STDERR "slurm.pl: @_\n";
  exit 1;
}

my $builtin_config = <<'EOF';
command sbatch --export=ALL --ntasks-per-node=1
option mem=* --mem=$0
option mem=0
option num_threads=* --cpus-per-task=$0
option num_threads=1
option gpu=* --gres=gpu:$0
option gpu=0
option time=* --time=$0
EOF

my @command;       # submit command and its fixed options
my %rules;         # "name=value" or "name=*" -> [sbatch options]
my %defaults;      # name -> value
sub read_config {
  my ($text, $where) = @_;
  my $lineno = 0;
  for my $line (split /\n/, $text) {
    $lineno++;
    $line =~ s/#.*//;
    my @f = split ' ', $line;
    next unless @f;
    my $kind = shift @f;
    if ($kind eq "command" && @f) {
      @command = @f;
    } elsif ($kind eq "option" && @f && $f[0] =~ /^\w+=\S+$/) {
      my $key = shift @f;
      $rules{$key} = [@f];
    } elsif ($kind eq "default" && @f == 1 && $f[0] =~ /^(\w+)=(\S+)$/) {
      $defaults{$1} = $2;
    } else {
      fail("$where:$lineno: expected 'command ...', 'option NAME=VALUE ...' or 'default NAME=VALUE'");
    }
  }
}
read_config($builtin_config, "built-in config");

my %given;         # option name -> value
my $max_jobs;
my $max_requeue = 10;
my $preempted_code = 75;
my ($job_name, $job_start, $job_end) = (undef, 1, 1);
while (@ARGV) {
  if ($ARGV[0] =~ /^--?(\S+)$/ && @ARGV >= 2) {
    my $name = $1;
    my (undef, $value) = splice(@ARGV, 0, 2);
    $name =~ s/-/_/g;
    if ($name eq "config") {
      open(my $fh, "<", $value) or fail("cannot read config file '$value': $!");
      local $/;
      read_config(<$fh>, $value);
      close $fh;
    } elsif ($name eq "max_jobs_run" || $name eq "tc") {
      fail("--max-jobs-run needs a positive integer, got '$value'") unless $value =~ /^[1-9]\d*$/;
      $max_jobs = $value;
    } elsif ($name eq "max_requeue") {
      fail("--max-requeue needs an integer >= 0, got '$value'") unless $value =~ /^\d+$/;
      $max_requeue = $value;
    } else {
      $given{$name} = $value;
    }
  } elsif (!defined $job_name && $ARGV[0] =~ /^([A-Za-z_]\w*)=(\d+)(?::(\d+))?$/) {
    ($job_name, $job_start, $job_end) = ($1, $2, defined $3 ? $3 : $2);
    shift @ARGV;
  } else {
    last;
  }
}
fail("usage: slurm.pl [options] [JOB=1:N] LOG CMD ARGS...") if @ARGV < 2;
fail("invalid job range $job_name=$job_start:$job_end")
  if defined $job_name && ($job_start < 1 || $job_start > $job_end);
my ($log_template, @cmd) = @ARGV;
my $num_jobs = $job_end - $job_start + 1;
if (defined $job_name && $num_jobs > 1 && index($log_template, $job_name) < 0) {
  fail("$num_jobs jobs would share one log file '$log_template' (put $job_name in its name)");
}

# Resolve options (given, else default) to sbatch options.
my %values = (%defaults, %given);
my @sbatch_opts;
for my $name (sort keys %values) {
  my $value = $values{$name};
  if (exists $rules{"$name=$value"}) {
    push @sbatch_opts, @{ $rules{"$name=$value"} };
  } elsif (exists $rules{"$name=*"}) {
    push @sbatch_opts, map { (my $o = $_) =~ s/\$0/$value/g; $o } @{ $rules{"$name=*"} };
  } else {
    (my $flag = $name) =~ s/_/-/g;
    fail("no rule for option --$flag (add 'option $name=* ...' to a --config file)");
  }
}

sub for_job {
  my ($text, $id) = @_;
  $text =~ s/\Q$job_name\E/$id/g if defined $job_name;
  return $text;
}

# Quote one argument for bash so that run.pl on the node receives it unchanged.
sub quote {
  my ($w) = @_;
  $w =~ s/'/'\\''/g;
  return "'$w'";
}

my $log_dir = dirname($log_template);
my $qdir = "$log_dir/q";
(my $base = basename($log_template)) =~ s/\.log$//;
$base =~ s/\.?\Q$job_name\E//g if defined $job_name;
$base = "job" if $base eq "";
make_path($qdir);
make_path(dirname(for_job($log_template, $_))) for ($job_start .. $job_end);
# Remove stale logs so that a job which never ran cannot pass for a success.
unlink(for_job($log_template, $_)) for ($job_start .. $job_end);

my $run_pl = abs_path(dirname(__FILE__)) . "/run.pl";
my $job_arg = defined $job_name ? quote("$job_name=") . '"$SLURM_ARRAY_TASK_ID"' : "";
my $script = "$qdir/$base.sh";
open(my $sh, ">", "$script.tmp") or fail("cannot write $script: $!");
print $sh "#!/usr/bin/env bash\n";
print $sh "# Slurm array task: runs one job of the command below through run.pl.\n";
print $sh "cd " . quote(getcwd()) . " || exit 1\n";
print $sh "[ -f ./path.sh ] && . ./path.sh\n";
print $sh "exec " . join(" ", grep { $_ ne "" } quote($run_pl), $job_arg, quote($log_template), map { quote($_) } @cmd) . "\n";
close $sh;
rename("$script.tmp", $script) or fail("cannot write $script: $!");
chmod(0755, $script);

# The exit code a job's log ends with (128 + N for a command killed by signal N, as bash reports
# it), or undef when it never finished.
sub ended {
  my ($id) = @_;
  my $ended;
  if (open(my $fh, "<", for_job($log_template, $id))) {
    while (my $line = <$fh>) {
      $ended = defined $3 ? 128 + $3 : $1 if $line =~ /^# Ended \(code (\d+)(; signal (\d+))?/;
    }
    close $fh;
  }
  return $ended;
}

my @ids = ($job_start .. $job_end);
my (@submit, $sbatch_status);
for (my $attempt = 0; ; $attempt++) {
  # a contiguous range keeps its A-B form; the jobs submitted again are listed
  my $array = ($ids[-1] - $ids[0] + 1 == @ids ? "$ids[0]-$ids[-1]" : join(",", @ids))
    . (defined $max_jobs ? "%$max_jobs" : "");
  @submit = (
    @command, "--wait", "--array=$array", "--job-name=$base",
    "--output=$qdir/$base.%a.out", @sbatch_opts, $script,
  );
  system(@submit);
  $sbatch_status = $?;
  if ($sbatch_status == -1) {
    fail("cannot run '$command[0]': $!");
  }
  my @preempted = grep { my $e = ended($_); defined $e && $e == $preempted_code } @ids;
  last if !@preempted || $attempt >= $max_requeue;
  print STDERR "slurm.pl: " . scalar(@preempted) . " job(s) stopped with status $preempted_code (preempted): "
    . "submitting again (" . ($attempt + 1) . " of at most $max_requeue)\n";
  # the log of the stopped attempt is kept beside the new one
  rename(for_job($log_template, $_), for_job($log_template, $_) . ".preempted") for @preempted;
  @ids = @preempted;
}

my @failed;
for my $id ($job_start .. $job_end) {
  my $log = for_job($log_template, $id);
  my $ended = ended($id);
  push @failed, defined $ended ? $log : "$log (never finished; see $qdir/$base.$id.out)"
    unless defined $ended && $ended == 0;
}
if (@failed) {
  print STDERR "slurm.pl: " . scalar(@failed) . " / $num_jobs failed, see " . join(" ", @failed) . "\n";
  print STDERR "slurm.pl: '" . join(" ", @submit) . "' exited with status " . ($sbatch_status >> 8) . "\n"
    if $sbatch_status != 0;
  exit 1;
}
exit 0;
