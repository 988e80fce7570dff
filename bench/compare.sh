#!/usr/bin/env bash
# spoollock versus liblockfile, side by side, in one run on one directory.
#
#   cargo build --release && bash bench/compare.sh [DIR]
#
# DIR is where the locks are made (default: a fresh directory under
# /var/tmp, a local disk; pass e.g. /dev/shm for tmpfs or an NFS mount).
# What each figure means: bench/README.md.
#
# Knobs (environment): UNCONTENDED_CYCLES (20000), ROUNDS (5), WORKERS (4),
# CYCLES (20), HANDOFFS (200), LIBLOCKFILE_HANDOFFS (3: each one costs
# liblockfile's 5 s sleep).
#
# Installs nothing. Builds the two drivers: bench/lockfile_driver.c with
# `cc -O2 ... -llockfile`, and the spoollock-lockfile bench binary
# `compare_driver` with cargo.
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
case $TARGET in /*) ;; *) TARGET=$ROOT/$TARGET ;; esac
SPOOLLOCK=$TARGET/release/spoollock
OUT=$TARGET/bench-compare

UNCONTENDED_CYCLES=${UNCONTENDED_CYCLES:-20000}
ROUNDS=${ROUNDS:-5}
WORKERS=${WORKERS:-4}
CYCLES=${CYCLES:-20}
HANDOFFS=${HANDOFFS:-200}
LIBLOCKFILE_HANDOFFS=${LIBLOCKFILE_HANDOFFS:-3}

say() { printf '%s\n' "$*" >&2; }
die() { say "compare.sh: $*"; exit 2; }

# --- prerequisites -----------------------------------------------------------

[[ -x $SPOOLLOCK ]] || die "$SPOOLLOCK not found: run \`cargo build --release\` first"
command -v cargo >/dev/null || die "cargo not found"
command -v cc >/dev/null || die "no C compiler (cc) found"

mkdir -p "$OUT"
say "building the spoollock driver (cargo, release) ..."
RUST_DRIVER=$(cd "$ROOT" && cargo build --release --quiet -p spoollock-lockfile \
	--bench compare_driver --message-format=json-render-diagnostics |
	grep -o '"executable":"[^"]*compare_driver[^"]*"' | tail -n1 | cut -d'"' -f4) || true
[[ -n $RUST_DRIVER && -x $RUST_DRIVER ]] || die "could not build the compare_driver bench"

# liblockfile: the dotlockfile command, and lockfile.h + -llockfile for the C driver.
LIBLOCKFILE=yes
missing=()
command -v dotlockfile >/dev/null || missing+=("the dotlockfile command (package liblockfile-bin)")
C_DRIVER=$OUT/lockfile_driver
say "building the liblockfile driver (cc -O2 ... -llockfile) ..."
if ! cc -O2 -Wall -Wextra -o "$C_DRIVER" "$ROOT/bench/lockfile_driver.c" -llockfile 2>"$OUT/cc.log"; then
	missing+=("lockfile.h / -llockfile (package liblockfile-dev): $(grep -m1 -E 'error|cannot find' "$OUT/cc.log" || true)")
fi
if ((${#missing[@]})); then
	LIBLOCKFILE=no
	say "=============================================================================="
	say "liblockfile is MISSING:"
	for m in "${missing[@]}"; do say "  - $m"; done
	say "The comparison needs it: apt-get install liblockfile-dev liblockfile-bin"
	say "Only spoollock's own figures are measured; every ratio is n/a."
	say "=============================================================================="
fi

# --- the directory -----------------------------------------------------------

BASE=${1:-/var/tmp}
[[ -d $BASE ]] || die "$BASE is not a directory"
WORK=$(mktemp -d "$BASE/spoollock-compare.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
FSTYPE=$(findmnt -n -o FSTYPE -T "$WORK" 2>/dev/null | tail -n1)
[[ -n $FSTYPE ]] || FSTYPE=$(stat -f -c %T "$WORK" 2>/dev/null || echo unknown)

# --- helpers -----------------------------------------------------------------

# field KEY < driver output
field() { sed -n "s/^$1=//p"; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'; }
calc() { awk "BEGIN { printf \"$1\", $2 }"; }
# verdict OK-EXPR: "met" or "MISSED" (awk expression)
verdict() { awk "BEGIN { exit !($1) }" && echo met || echo MISSED; }

# --- 1. uncontended acquire + release, in-process ---------------------------

say "[1/3] uncontended acquire+release, $UNCONTENDED_CYCLES cycles x $ROUNDS rounds each, alternating ..."
rust_runs=() c_runs=() named_runs=()
for ((r = 0; r < ROUNDS; r++)); do
	rust_runs+=("$("$RUST_DRIVER" uncontended "$WORK" "$UNCONTENDED_CYCLES" | field ns_per_cycle)")
	# The same with the named temporary file NFS and FUSE get (COMPARE_NAMED).
	named_runs+=("$(COMPARE_NAMED=1 "$RUST_DRIVER" uncontended "$WORK" "$UNCONTENDED_CYCLES" | field ns_per_cycle)")
	if [[ $LIBLOCKFILE == yes ]]; then
		c_runs+=("$("$C_DRIVER" uncontended "$WORK" "$UNCONTENDED_CYCLES" | field ns_per_cycle)")
	fi
done
UNC_RUST=$(printf '%s\n' "${rust_runs[@]}" | median)
UNC_NAMED=$(printf '%s\n' "${named_runs[@]}" | median)
UNC_C=$( ((${#c_runs[@]})) && printf '%s\n' "${c_runs[@]}" | median || true)

# --- 2. contended, through the command line tools ----------------------------

MBOX=$WORK/mbox
# One worker: CYCLES x (lock, append "wW cI" to the data file, unlock).
# Per cycle it records when it started asking and when it was done waiting
# (dotlockfile: `dotlockfile -l` returned; spoollock: `spoollock run`
# returned, i.e. after the append and the release too: an upper bound).
cli_worker() {
	local tool=$1 w=$2 data=$3 i t0 t1 rc
	local log=$WORK/waits.$tool.$w
	: >"$log"
	for ((i = 1; i <= CYCLES; i++)); do
		t0=$EPOCHREALTIME
		while :; do
			if [[ $tool == spoollock ]]; then
				rc=0
				"$SPOOLLOCK" run -q --timeout 120s "$MBOX" -- \
					sh -c 'echo "$1" >> "$2"' sh "w$w c$i" "$data" || rc=$?
				t1=$EPOCHREALTIME
				((rc == 0)) && break
			else
				rc=0
				dotlockfile -l "$MBOX.lock" || rc=$?
				t1=$EPOCHREALTIME
				if ((rc == 0)); then
					echo "w$w c$i" >>"$data"
					dotlockfile -u "$MBOX.lock"
					break
				fi
			fi
			echo "failure rc=$rc" >>"$WORK/failures.$tool"
		done
		echo "$t0 $t1" >>"$log"
	done
}

# run_cli TOOL: sets WALL (s), MAXWAIT (s), MEDWAIT (s), LINES (verdict), FAILS
run_cli() {
	local tool=$1 start end w i
	local data=$WORK/data.$tool
	: >"$data"
	rm -f "$WORK/failures.$tool" "$MBOX.lock"
	start=$EPOCHREALTIME
	for ((w = 1; w <= WORKERS; w++)); do
		cli_worker "$tool" "$w" "$data" &
	done
	wait
	end=$EPOCHREALTIME
	WALL=$(calc %.3f "$end - $start")
	MAXWAIT=$(cat "$WORK"/waits."$tool".* | awk '{ d = $2 - $1; if (d > m) m = d } END { printf "%.4f", m }')
	MEDWAIT=$(cat "$WORK"/waits."$tool".* | awk '{ printf "%.6f\n", $2 - $1 }' | median)
	FAILS=$( [[ -f $WORK/failures.$tool ]] && wc -l <"$WORK/failures.$tool" || echo 0)
	local expected=$WORK/expected
	for ((w = 1; w <= WORKERS; w++)); do
		for ((i = 1; i <= CYCLES; i++)); do echo "w$w c$i"; done
	done | sort >"$expected"
	local total dups missing
	total=$(wc -l <"$data")
	dups=$(sort "$data" | uniq -d | wc -l)
	missing=$(sort -u "$data" | comm -23 "$expected" - | wc -l)
	if [[ $total -eq $((WORKERS * CYCLES)) && $dups -eq 0 && $missing -eq 0 ]] &&
		sort "$data" | cmp -s - "$expected"; then
		LINES="$total/$((WORKERS * CYCLES)) ok"
	else
		LINES="BAD: $total lines, $dups duplicated, $missing missing"
	fi
	[[ ! -e $MBOX.lock ]] || LINES="$LINES, LOCK LEFT BEHIND"
}

say "[2/3] $WORKERS workers x $CYCLES cycles lock/append/release: spoollock run ..."
run_cli spoollock
CLI_S_WALL=$WALL CLI_S_MAX=$MAXWAIT CLI_S_MED=$MEDWAIT CLI_S_LINES=$LINES CLI_S_FAILS=$FAILS
if [[ $LIBLOCKFILE == yes ]]; then
	say "      ... and dotlockfile -l/-u (its default retries: sleeps of 5, 10, 15 s; takes a while) ..."
	run_cli dotlockfile
	CLI_D_WALL=$WALL CLI_D_MAX=$MAXWAIT CLI_D_MED=$MEDWAIT CLI_D_LINES=$LINES CLI_D_FAILS=$FAILS
fi

# --- 3. hand-off latency ------------------------------------------------------

say "[3/3] hand-off latency: $HANDOFFS hand-offs with spoollock-lockfile ..."
HO_RUST=$("$RUST_DRIVER" handoff "$WORK" "$HANDOFFS")
if [[ $LIBLOCKFILE == yes ]] && ((LIBLOCKFILE_HANDOFFS > 0)); then
	say "      ... and $LIBLOCKFILE_HANDOFFS with liblockfile lockfile_create(retries) (about 5 s each) ..."
	HO_C=$("$C_DRIVER" handoff "$WORK" "$LIBLOCKFILE_HANDOFFS")
fi

# --- the table ----------------------------------------------------------------

us() { calc %.1f "$1 / 1000"; }
row() { printf '%-44s %14s %16s %20s %10s %s\n' "$@"; }
na="n/a"

echo
echo "spoollock vs liblockfile: $(uname -sr), $(nproc) CPUs"
echo "directory: $WORK ($FSTYPE)"
echo
row "figure" "spoollock" "liblockfile" "ratio" "target" "verdict"
row "------" "---------" "-----------" "-----" "------" "-------"

if [[ -n $UNC_C ]]; then
	ratio=$(calc %.2f "$UNC_RUST / $UNC_C")
	row "uncontended acquire+release, per cycle" "$(us "$UNC_RUST") us" "$(us "$UNC_C") us" \
		"${ratio}x the time" "<= 1.0x" "$(verdict "$ratio <= 1.0")"
else
	row "uncontended acquire+release, per cycle" "$(us "$UNC_RUST") us" "$na" "$na" "<= 1.0x" "-"
fi
if [[ -n $UNC_C ]]; then
	row "  the same, named temporary file (NFS path)" "$(us "$UNC_NAMED") us" "$(us "$UNC_C") us" \
		"$(calc %.2f "$UNC_NAMED / $UNC_C")x the time" "" ""
fi
rounds() { local v; (($#)) || { echo "n/a"; return; }; for v; do printf '%s ' "$(us "$v")"; done; echo us; }
echo "    (median of $ROUNDS rounds of $UNCONTENDED_CYCLES cycles; spoollock rounds: $(rounds "${rust_runs[@]}"); named: $(rounds "${named_runs[@]}"); liblockfile: $(rounds "${c_runs[@]}"))"

if [[ $LIBLOCKFILE == yes ]]; then
	ratio=$(calc %.1f "$CLI_D_WALL / $CLI_S_WALL")
	row "CLI ${WORKERS}x${CYCLES} lock/append/release, total" "${CLI_S_WALL} s" "${CLI_D_WALL} s" \
		"${ratio}x faster" ">= 50x" "$(verdict "$ratio >= 50")"
	row "  longest single wait of any worker" "$(calc %.1f "$CLI_S_MAX * 1000") ms" \
		"$(calc %.1f "$CLI_D_MAX * 1000") ms" "" "< 100 ms" "$(verdict "$CLI_S_MAX < 0.1")"
	row "  median wait per cycle" "$(calc %.1f "$CLI_S_MED * 1000") ms" \
		"$(calc %.1f "$CLI_D_MED * 1000") ms" "" "" ""
	row "  every line present exactly once" "$CLI_S_LINES" "$CLI_D_LINES" "" "" ""
	row "  lock attempts given up and retried" "$CLI_S_FAILS" "$CLI_D_FAILS" "" "" ""
else
	row "CLI ${WORKERS}x${CYCLES} lock/append/release, total" "${CLI_S_WALL} s" "$na" "$na" ">= 50x" "-"
	row "  longest single wait of any worker" "$(calc %.1f "$CLI_S_MAX * 1000") ms" "$na" "" \
		"< 100 ms" "$(verdict "$CLI_S_MAX < 0.1")"
	row "  median wait per cycle" "$(calc %.1f "$CLI_S_MED * 1000") ms" "$na" "" "" ""
	row "  every line present exactly once" "$CLI_S_LINES" "$na" "" "" ""
	row "  lock attempts given up and retried" "$CLI_S_FAILS" "$na" "" "" ""
fi

ho_r_med=$(field median_us <<<"$HO_RUST")
ho_r_p90=$(field p90_us <<<"$HO_RUST")
ho_r_max=$(field max_us <<<"$HO_RUST")
if [[ -n ${HO_C:-} ]]; then
	ho_c_med=$(field median_us <<<"$HO_C")
	ho_c_p90=$(field p90_us <<<"$HO_C")
	ho_c_max=$(field max_us <<<"$HO_C")
	row "hand-off latency, median (n=$HANDOFFS / n=$LIBLOCKFILE_HANDOFFS)" \
		"$(calc %.3f "$ho_r_med / 1000") ms" "$(calc %.1f "$ho_c_med / 1000") ms" \
		"$(calc %.0f "$ho_c_med / $ho_r_med")x faster" "< 2 ms" "$(verdict "$ho_r_med < 2000")"
	row "hand-off latency, p90" "$(calc %.3f "$ho_r_p90 / 1000") ms" \
		"$(calc %.1f "$ho_c_p90 / 1000") ms" "" "" ""
	row "hand-off latency, max" "$(calc %.3f "$ho_r_max / 1000") ms" \
		"$(calc %.1f "$ho_c_max / 1000") ms" "" "" ""
else
	row "hand-off latency, median (n=$HANDOFFS)" "$(calc %.3f "$ho_r_med / 1000") ms" "$na" "$na" \
		"< 2 ms" "$(verdict "$ho_r_med < 2000")"
	row "hand-off latency, p90" "$(calc %.3f "$ho_r_p90 / 1000") ms" "$na" "" "" ""
	row "hand-off latency, max" "$(calc %.3f "$ho_r_max / 1000") ms" "$na" "" "" ""
fi
echo
echo "Figures are measurements, not assertions; see bench/README.md for what each one means."

if [[ $LIBLOCKFILE == no ]]; then
	say "liblockfile is MISSING (apt-get install liblockfile-dev liblockfile-bin): no comparison was made."
	exit 1
fi
