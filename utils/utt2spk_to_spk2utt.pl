#!/usr/bin/env perl
# Usage: utils/utt2spk_to_spk2utt.pl [utt2spk] > spk2utt
# Reads "<utt> <speaker>" lines (a file or stdin) and prints "<speaker> <utt1> <utt2> ..." with
# speakers in order of first appearance and utterances in input order.
use strict;
use warnings;

my (@speakers, %utts);
while (my $line = <>) {
  my @fields = split(' ', $line);
  @fields == 2 or die "$0: bad line $. (expected '<utt> <speaker>'): $line";
  my ($utt, $spk) = @fields;
  push @speakers, $spk unless exists $utts{$spk};
  push @{ $utts{$spk} }, $utt;
}
print join(' ', $_, @{ $utts{$_} }), "\n" for @speakers;
