#!/usr/bin/env bash
# The answer_path micro-benchmark (benches/answer_path.rs) of two or more builds, run
# alternately, for a change on the DNS answer path: one build's figures against another's
# measured in the same minutes.
#
#   bench/answer_path.sh OLD NEW                         # 3 runs each
#   ROUNDS=5 BIG=0 HUGE=0 bench/answer_path.sh OLD NEW   # 5 runs each, 1 000 instances only
#
# OLD and NEW are bench executables, as `cargo bench --bench answer_path --no-run` prints them
# (`Executable benches/answer_path.rs (target/release/deps/answer_path-HASH)`); build each
# checkout in turn and copy its executable aside, since the next build of the same
# dependencies overwrites it. Each of ROUNDS (default 3) rounds runs every executable once, in
# turn, with --bench, pinned to CPU $CPU (default 1; empty: not pinned), with the executable's
# own ROUNDS set to $INNER_ROUNDS (default 1) and QUERIES, BIG and HUGE passed on (see
# benches/answer_path.rs; its defaults: 200 000 queries, 1 000 000 and 100 000 instances).
# Prints each run's fast-path ns per query at 1 000 instances, then, per section and query
# kind, each build's median ns per query over the rounds and each build's ratio to the first.
# Runs' full output goes to $WORK.
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"
ROUNDS=${ROUNDS:-3}
INNER_ROUNDS=${INNER_ROUNDS:-1}
CPU=${CPU-1}
WORK=${WORK:-/tmp/signpost-bench/answer-path}
for var in ROUNDS INNER_ROUNDS QUERIES BIG HUGE; do  # older executables ignore a bad value
  [[ -z ${!var+set} || ${!var} =~ ^[0-9]+$ ]] || die "$var must be a whole number, got $var=${!var}"
done
(( 10#$ROUNDS >= 1 && 10#$INNER_ROUNDS >= 1 )) || die "ROUNDS and INNER_ROUNDS must be at least 1"
[ $# -ge 1 ] || die "usage: bench/answer_path.sh EXECUTABLE... (see the comment at its top)"
[ $# -le 26 ] || die "at most 26 executables"
executables "$@"
labels=(A B C D E F G H I J K L M N O P Q R S T U V W X Y Z)
labels=("${labels[@]:0:${#bins[@]}}")
for i in "${!bins[@]}"; do echo "${labels[$i]}: ${bins[$i]}"; done
rm -rf "$WORK"; mkdir -p "$WORK"
pin=()
[ -z "$CPU" ] || pin=(taskset -c "$CPU")

# Turns one run's output into lines "SECTION<TAB>QUESTION<TAB>NS".
figures() {
  awk '
    /^answer path/ {section = "1 000 instances"; next}
    /^[0-9]+ instances/ {section = $1 " instances"; next}
    /^huge:/ {section = "huge"; next}
    /^  / && / fast / {
      kind = $0; sub(/ +fast .*/, "", kind); sub(/^ +/, "", kind)
      for (i = 1; i < NF; i++) {
        if ($i == "fast") printf "%s\t%s, fast\t%s\n", section, kind, $(i + 1)
        if ($i == "general") printf "%s\t%s, general\t%s\n", section, kind, $(i + 1)
      }
      next
    }
    /^  / && $NF == "ns" {printf "%s\t%s %s\t%s\n", section, $1, $2, $(NF - 1)}' "$1"
}

: >"$WORK/results"
for round in $(seq 1 "$ROUNDS"); do
  for i in "${!bins[@]}"; do
    label=${labels[$i]} out=$WORK/$label.$round.txt
    ROUNDS=$INNER_ROUNDS "${pin[@]}" "${bins[$i]}" --bench >"$out" 2>&1 \
      || { cat "$out" >&2; die "${bins[$i]} failed"; }
    figures "$out" | sed "s/^/$label\t/" >>"$WORK/results"
    echo "round $round $label: $(figures "$out" | awk -F'\t' '$1 == "1 000 instances" && $2 ~ /, fast$/ {printf "%s ", $3}')ns (fast, 1 000 instances)" >&2
  done
done

# The table: a row per section and question, in the order of the first run.
awk -F'\t' '!seen[$2 FS $3]++ {print $2 FS $3}' "$WORK/results" >"$WORK/rows"
printf "%-17s %-36s" section "question (ns per query, median)"
for label in "${labels[@]}"; do printf " %8s" "$label"; done
for label in "${labels[@]:1}"; do printf " %6s" "$label/${labels[0]}"; done
echo
while IFS=$'\t' read -r section question; do
  printf "%-17s %-36s" "$section" "$question"
  medians=()
  for label in "${labels[@]}"; do  # "-" where a build's output has no such row
    medians+=("$(awk -F'\t' -v l="$label" -v s="$section" -v q="$question" \
      '$1 == l && $2 == s && $3 == q {print $4}' "$WORK/results" | { median 2>/dev/null || echo -; })")
    printf " %8s" "$(awk -v m="${medians[-1]}" 'BEGIN {printf m == "-" ? m : "%.0f", m}')"
  done
  for m in "${medians[@]:1}"; do
    awk -v m="$m" -v base="${medians[0]}" \
      'BEGIN {if (m == "-" || base == "-") printf " %6s", "-"; else printf " %6.2f", m / base}'
  done
  echo
done <"$WORK/rows"
