#!/usr/bin/env bash
# liblockfile's C API: Debian's liblockfile against spoollock's
# liblockfile.so.1 (capi), one C program (bench/capi_bench.c) built against
# each, side by side in one run.
#
#   bash bench/capi-compare.sh [DIR]
#
# Figures (measurements, never assertions; see bench/README.md):
#   1. lockfile_create(..., 0, L_PID) + lockfile_remove, uncontended, in DIR
#      (default: a fresh directory under /var/tmp), per cycle, median of
#      ROUNDS rounds of CYCLES cycles;
#   2. maillock + mailunlock by an unprivileged program in a mail-group
#      spool (/var/mail root:mail 2775): liblockfile execs dotlockfile twice
#      a cycle, spoollock talks to spoollock-helper. Needs root (a private
#      mount namespace, as capi/tests/debian_binaries.rs); skipped otherwise;
#   3. WORKERS processes x CONTEND_CYCLES lockfile_create(..., 5, L_PID) /
#      append / lockfile_remove on one lock: total wall time.
#
# Knobs: CYCLES (20000), ROUNDS (5), MAILLOCK_CYCLES (200), WORKERS (4),
# CONTEND_CYCLES (20). Builds spoollock-capi and the helper with
# `cargo build --release`; installs nothing.
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
case $TARGET in /*) ;; *) TARGET=$ROOT/$TARGET ;; esac
OUT=$TARGET/capi-bench
CYCLES=${CYCLES:-20000}
ROUNDS=${ROUNDS:-5}
MAILLOCK_CYCLES=${MAILLOCK_CYCLES:-200}
WORKERS=${WORKERS:-4}
CONTEND_CYCLES=${CONTEND_CYCLES:-20}

say() { printf '%s\n' "$*" >&2; }
die() { say "capi-compare.sh: $*"; exit 2; }

command -v cc >/dev/null || die "no C compiler (cc)"
[ -e /usr/include/lockfile.h ] || die "no lockfile.h (apt-get install liblockfile-dev)"

say "building spoollock-capi, spoollock-helper and spoollock (cargo, release) ..."
(cd "$ROOT" && cargo build --release --quiet -p spoollock-capi -p spoollock-helper -p spoollock)
mkdir -p "$OUT/lib"
cp "$TARGET/release/liblockfile.so" "$OUT/lib/liblockfile.so"
ln -sf liblockfile.so "$OUT/lib/liblockfile.so.1"

say "building bench/capi_bench.c against both libraries ..."
cc -O2 -Wall -Wextra -o "$OUT/bench-liblockfile" "$ROOT/bench/capi_bench.c" -llockfile
cc -O2 -Wall -Wextra -I"$ROOT/capi/include" -o "$OUT/bench-spoollock" "$ROOT/bench/capi_bench.c" \
	-L"$OUT/lib" -Wl,--disable-new-dtags,-rpath,"$OUT/lib" -llockfile

DIR=${1:-}
if [ -z "$DIR" ]; then
	DIR=$(mktemp -d /var/tmp/capi-bench.XXXXXX)
	trap 'rm -rf "$DIR"' EXIT
fi

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# --- 1. uncontended ------------------------------------------------------------
declare -A UNC
for lib in liblockfile spoollock; do : > "$OUT/unc-$lib"; done
for ((r = 0; r < ROUNDS; r++)); do
	for lib in liblockfile spoollock; do
		"$OUT/bench-$lib" uncontended "$DIR/bench.lock" "$CYCLES" | awk '{ print $2 }' >> "$OUT/unc-$lib"
	done
done
for lib in liblockfile spoollock; do UNC[$lib]=$(median < "$OUT/unc-$lib"); done

# --- 3. contention ------------------------------------------------------------------
declare -A CON GAVE
for lib in liblockfile spoollock; do
	rm -f "$DIR/contend.data" "$DIR/contend.lock" "$DIR/go"
	pids=()
	for ((w = 0; w < WORKERS; w++)); do
		"$OUT/bench-$lib" contend "$DIR/contend.lock" "$DIR/contend.data" "$CONTEND_CYCLES" "w$w" \
			"$DIR/go" > "$OUT/contend-$lib-$w" &
		pids+=($!)
	done
	sleep 0.5 # all started and polling for the start signal
	start=$(date +%s%N)
	touch "$DIR/go"
	for p in "${pids[@]}"; do wait "$p"; done
	CON[$lib]=$((($(date +%s%N) - start) / 1000000))
	GAVE[$lib]=$(awk '{ s += $2 } END { print s + 0 }' "$OUT"/contend-$lib-*)
	lines=$(sort -u "$DIR/contend.data" | wc -l)
	[ "$lines" -eq $((WORKERS * CONTEND_CYCLES)) ] && [ "$(wc -l < "$DIR/contend.data")" -eq "$lines" ] ||
		die "$lib: the data file has $(wc -l < "$DIR/contend.data") lines, $lines distinct (exclusion failed?)"
done

# --- 2. maillock in a mail-group spool ---------------------------------------------
declare -A ML=([liblockfile]=n/a [spoollock]=n/a)
if [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null && command -v rsyslogd >/dev/null &&
	command -v lockfile-create >/dev/null; then
	U=sl-capi-u
	id "$U" >/dev/null 2>&1 || useradd --no-create-home --shell /usr/sbin/nologin --user-group \
		--comment "spoollock capi test user" "$U"
	S=$(mktemp -d /tmp/capi-bench-ns.XXXXXX)
	chmod 755 "$S"
	mkdir -p "$S/bin" "$S/lib"
	cp "$OUT/bench-liblockfile" "$S/bin/bench"
	cp "$OUT/lib/liblockfile.so" "$S/lib/liblockfile.so"
	S=$S HELPER=$TARGET/release/spoollock-helper SPOOLLOCK=$TARGET/release/spoollock U=$U \
		PHASES=bench BENCH_CYCLES=$MAILLOCK_CYCLES \
		unshare -m --propagation private sh "$ROOT/capi/tests/sh/spool-namespace.sh" ||
		die "the namespace for the maillock figure failed"
	ML[spoollock]=$(awk '{ print $2 }' "$S/bench-maillock-ours")
	ML[liblockfile]=$(awk '{ print $2 }' "$S/bench-maillock-real")
	rm -rf "$S"
else
	say "maillock figure skipped: needs root, unshare, rsyslogd and lockfile-progs"
fi

# --- the table ---------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a" || b == 0) print "n/a"; else printf "%.2fx", a / b }'; }
us() { awk -v n="$1" 'BEGIN { if (n == "n/a") print n; else printf "%.1f us", n / 1000 }'; }
printf '\n%-58s %14s %14s %12s\n' "figure (in $DIR)" liblockfile spoollock "spoollock/lib"
printf '%-58s %14s %14s %12s\n' "lockfile_create(0, L_PID) + lockfile_remove, per cycle" \
	"$(us "${UNC[liblockfile]}")" "$(us "${UNC[spoollock]}")" "$(ratio "${UNC[spoollock]}" "${UNC[liblockfile]}")"
printf '%-58s %14s %14s %12s\n' "maillock + mailunlock, mail-group spool, per cycle" \
	"$(us "${ML[liblockfile]}")" "$(us "${ML[spoollock]}")" "$(ratio "${ML[spoollock]}" "${ML[liblockfile]}")"
printf '%-58s %14s %14s %12s\n' "$WORKERS x $CONTEND_CYCLES create(5, L_PID)/append/remove, total" \
	"${CON[liblockfile]} ms" "${CON[spoollock]} ms" "$(ratio "${CON[spoollock]}" "${CON[liblockfile]}")"
printf '%-58s %14s %14s\n' "  creates that gave up (L_MAXTRYS) and were retried" "${GAVE[liblockfile]}" "${GAVE[spoollock]}"
printf '\nuncontended rounds (ns/cycle): liblockfile %s; spoollock %s\n' \
	"$(tr '\n' ' ' < "$OUT/unc-liblockfile")" "$(tr '\n' ' ' < "$OUT/unc-spoollock")"
