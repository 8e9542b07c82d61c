#!/usr/bin/env perl
# Usage: utils/filter_scp.pl [--exclude] [-f <field>] <id-list> [<in.scp>] > out.scp
# Prints the lines of <in.scp> (or stdin) whose <field>-th field (default 1) is (with --exclude:
# is not) the first field of a line of <id-list>. Input order is kept.
use strict;
use warnings;

my ($exclude, $field) = (0, 1);
while (@ARGV && $ARGV[0] =~ /^-/) {
  my $opt = shift @ARGV;
  if ($opt eq '--exclude') { $exclude = 1; }
  elsif ($opt eq '-f') { $field = shift @ARGV; }
  else { die "$0: unknown option $opt\n"; }
}
(defined $field && $field =~ /^[1-9][0-9]*$/) or die "$0: -f needs a positive field number\n";
(@ARGV == 1 || @ARGV == 2) or die "Usage: $0 [--exclude] [-f <field>] <id-list> [<in.scp>]\n";

my $list = shift @ARGV;
open(my $fh, '<', $list) or die "$0: cannot open $list: $!\n";
my %wanted;
while (my $line = <$fh>) {
  my ($id) = split(' ', $line);
  $wanted{$id} = 1 if defined $id;
}
close($fh);

while (my $line = <>) {
  my @fields = split(' ', $line);
  my $id = $fields[$field - 1];
  my $hit = defined $id && exists $wanted{$id};
  print $line if ($hit xor $exclude);
}
