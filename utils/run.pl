#!/usr/bin/env perl
# Run a command, or an array of jobs, on this machine, each with its own log file.
#
#   utils/run.pl [options] LOG CMD ARGS...
#   utils/run.pl [options] JOB=1:N LOG.JOB.log CMD ARGS...
#
# The arguments after LOG are joined into one bash command line. Words made of letters, digits,
# _-+=/.,:@%^ and the shell characters |;<>&()!*?[]{}~$ go in as they are, so a bare "|" stays
# an operator ("a \| b" pipes) and globs and $VAR expand on the node; any other argument (with
# whitespace, quotes, a backslash or #) is single-quoted and reaches the command unchanged.
# With JOB=A:B (any identifier may replace JOB) every occurrence of the name in LOG and the
# command becomes the job number, and up to --max-jobs-run jobs run at once (default: the number
# of CPUs). Each log starts with the command and the start time and ends with the exit code and
# the elapsed time. Exit status 0 when every job succeeded; otherwise the failed logs are named
# and the status is 1. SIGTERM and SIGUSR1 are passed on to the running commands (a cluster's
# warning before it stops a job: training then checkpoints and ends with status 75) and the logs
# are still closed with the exit codes.
#
# Options (before or after JOB=...):
#   --max-jobs-run N            run at most N jobs at once
#   --mem M, --gpu N, --num-threads N, --time T, --config F, ...
#                               accepted and ignored: they are for the cluster twins (slurm.pl)
use strict;
use warnings;
use File::Basename qw(dirname);
use File::Path qw(make_path);
use POSIX qw(strftime);

sub usage {
  print STDERR "usage: run.pl [--max-jobs-run N] [JOB=1:N] LOG CMD ARGS...\n";
  exit 1;
}

# Report a usage error and exit 1 (die would exit 255).
sub fail {
  print STDERR "run.pl: @_\n";
  exit 1;
}

my $max_jobs;
my ($job_name, $job_start, $job_end) = (undef, 1, 1);
# Options and JOB=A:B may come in any order before LOG.
while (@ARGV) {
  if ($ARGV[0] =~ /^-/ && @ARGV >= 2) {
    my ($opt, $value) = splice(@ARGV, 0, 2);
    if ($opt eq "--max-jobs-run" || $opt eq "-tc") {
      fail("--max-jobs-run needs a positive integer, got '$value'") unless $value =~ /^[1-9]\d*$/;
      $max_jobs = $value;
    }
    # Any other option belongs to a cluster runner and is ignored here.
  } elsif (!defined $job_name && $ARGV[0] =~ /^([A-Za-z_]\w*)=(\d+)(?::(\d+))?$/) {
    ($job_name, $job_start, $job_end) = ($1, $2, defined $3 ? $3 : $2);
    shift @ARGV;
  } else {
    last;
  }
}
usage() if @ARGV < 2;
fail("invalid job range $job_name=$job_start:$job_end")
  if defined $job_name && ($job_start < 1 || $job_start > $job_end);

my $log_template = shift @ARGV;
my $num_jobs = $job_end - $job_start + 1;
if (defined $job_name && $num_jobs > 1 && index($log_template, $job_name) < 0) {
  fail("$num_jobs jobs would share one log file '$log_template' (put $job_name in its name)");
}

sub shell_word {
  my ($w) = @_;
  return $w if $w =~ m{^[\w\-+=/.,:@%^|;<>&()!*?\[\]{}~\$]+$};
  $w =~ s/'/'\\''/g;
  return "'$w'";
}
my $cmd_template = join(" ", map { shell_word($_) } @ARGV);

sub for_job {
  my ($text, $id) = @_;
  $text =~ s/\Q$job_name\E/$id/g if defined $job_name;
  return $text;
}

sub num_cpus {
  my $n = 0;
  if (open(my $fh, "<", "/proc/cpuinfo")) {
    while (<$fh>) { $n++ if /^processor\s*:/ }
    close $fh;
  }
  if (!$n && open(my $p, "-|", "getconf _NPROCESSORS_ONLN 2>/dev/null")) {
    my $line = <$p>;
    close $p;
    $n = $1 if defined $line && $line =~ /(\d+)/;
  }
  return $n || 1;
}
$max_jobs = num_cpus() unless defined $max_jobs;

sub run_job {
  my ($id) = @_;
  my $log = for_job($log_template, $id);
  my $cmd = for_job($cmd_template, $id);
  make_path(dirname($log));
  open(my $fh, ">", $log) or die "run.pl: cannot write log file $log: $!\n";
  my $t0 = time;
  print $fh "# $cmd\n# Started at " . localtime($t0) . "\n#\n";
  close $fh;
  # pass the cluster's warnings on to the command (bash execs a simple command: that is its pid);
  # one that comes before bash started is passed on as soon as it has
  my ($pid, $pending);
  local $SIG{TERM} = local $SIG{USR1} = sub { if ($pid) { kill $_[0], $pid } else { $pending = $_[0] } };
  $pid = fork();
  die "run.pl: cannot fork: $!\n" unless defined $pid;
  if ($pid == 0) {
    open(STDOUT, ">>", $log) or die "run.pl: cannot append to $log: $!\n";
    open(STDERR, ">&", \*STDOUT) or die "run.pl: cannot redirect stderr: $!\n";
    open(STDIN, "<", "/dev/null");
    exec("bash", "-c", $cmd) or die "run.pl: cannot run bash: $!\n";
  }
  kill $pending, $pid if $pending;
  waitpid($pid, 0);  # Perl restarts it after a signal handler has run
  my $status = $?;
  my $code = $status >> 8;
  my $signal = $status & 127;
  my $t1 = time;
  my $how = $signal ? "code $code; signal $signal" : "code $code";
  open($fh, ">>", $log) or die "run.pl: cannot append to log file $log: $!\n";
  print $fh "# Accounting: time=" . ($t1 - $t0) . " threads=1\n";
  print $fh "# Ended ($how) at " . localtime($t1) . ", elapsed time " . ($t1 - $t0) . " seconds\n";
  close $fh;
  return $status == 0 ? 0 : 1;
}

# One supervising child per job: it writes the log header and footer around bash.
my %running;   # pid -> job id
my @failed;
my $stopping;   # a stop signal came: jobs not started yet are not started (and count as failed)
$SIG{TERM} = $SIG{USR1} = sub { $stopping = 1; kill $_[0], keys %running };
sub reap_one {
  my $pid = waitpid(-1, 0);
  return if $pid <= 0 || !exists $running{$pid};
  push @failed, $running{$pid} if $? != 0;
  delete $running{$pid};
}
for my $id ($job_start .. $job_end) {
  reap_one() while scalar(keys %running) >= $max_jobs;
  if ($stopping) { push @failed, $id; next; }
  my $pid = fork();
  die "run.pl: cannot fork: $!\n" unless defined $pid;
  if ($pid == 0) {
    exit(run_job($id));
  }
  $running{$pid} = $id;
}
reap_one() while %running;

if (@failed) {
  my @logs = map { for_job($log_template, $_) } sort { $a <=> $b } @failed;
  print STDERR "run.pl: " . scalar(@failed) . " / $num_jobs failed, see " . join(" ", @logs) . "\n";
  exit 1;
}
exit 0;
