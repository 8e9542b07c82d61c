#!/usr/bin/env perl
# Usage: utils/spk2utt_to_utt2spk.pl [spk2utt] > utt2spk
# Reads "<speaker> <utt1> <utt2> ..." lines (a file or stdin) and prints one "<utt> <speaker>"
# line per utterance, in input order.
use strict;
use warnings;

while (my $line = <>) {
  my ($spk, @utts) = split(' ', $line);
  @utts or die "$0: bad line $. (a speaker with no utterances): $line";
  print "$_ $spk\n" for @utts;
}
