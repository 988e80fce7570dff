#!/usr/bin/env bash
# Mailbox append throughput: WRITERS concurrent writers appending to one
# mbox, spoollock versus the peers, side by side in one run, in one
# directory (one disk).
#
#   bash bench/mailbox.sh [DIR]
#
# DIR is where the mailbox lives (default: a fresh directory under
# /var/tmp, a local disk; pass e.g. /dev/shm for tmpfs or an NFS mount).
#
# The writers, each appending the same ~4 KB message:
#   spoollock-lib       MailboxLock::open + append + release in a loop, in
#                       one process per writer (client/examples/mailbox_append)
#   spoollock-deliver   `spoollock deliver MBOX < message`, a process a message
#   dotlockfile         `dotlockfile -l MBOX.lock; cat entry >> MBOX;
#                       dotlockfile -u MBOX.lock`, liblockfile's own waits
#                       (sleeps of 5, 10, 15 ... s on a busy lock)
#   dotlockfile-spin    the same with `-r 0` retried by the shell every 10 ms
#                       (what a script can do to avoid those sleeps)
#   procmail            `procmail -m RC < message`, RC a `:0:` recipe to MBOX:
#                       dotlock then fcntl; a busy dotlock sleeps LOCKSLEEP
#                       (8 s by default)
#   procmail-locksleep1 the same with LOCKSLEEP=1
#
# Not equal work: spoollock fdatasyncs every message before unlocking (a
# delivered message is on disk); cat and procmail do not sync.
#
# Knobs (environment): WRITERS (4), MESSAGES (250: messages per writer for
# spoollock and dotlockfile-spin), ROUNDS (3: runs of those, alternating;
# the median counts), SLOW_MESSAGES (10: per writer, one run, for the peers
# that sleep whole seconds on a busy lock), BODY_LINES (60, ~4 KB).
#
# Needs bash 5, cargo, and the peers (liblockfile-bin, procmail); a peer
# that is missing is reported and its rows are n/a. Installs nothing.
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
case $TARGET in /*) ;; *) TARGET=$ROOT/$TARGET ;; esac
SPOOLLOCK=$TARGET/release/spoollock
APPEND=$TARGET/release/examples/mailbox_append

WRITERS=${WRITERS:-4}
MESSAGES=${MESSAGES:-250}
SLOW_MESSAGES=${SLOW_MESSAGES:-10}
BODY_LINES=${BODY_LINES:-60}
ROUNDS=${ROUNDS:-3}

say() { printf '%s\n' "$*" >&2; }
die() { say "mailbox.sh: $*"; exit 2; }
calc() { awk "BEGIN { printf \"$1\", $2 }"; }

[[ -n ${EPOCHREALTIME:-} ]] || die "needs bash 5 (EPOCHREALTIME)"
command -v cargo >/dev/null || die "cargo not found"
say "building spoollock and the mailbox_append example (cargo, release) ..."
(cd "$ROOT" && cargo build --release --quiet -p spoollock --bin spoollock --example mailbox_append) ||
	die "cargo build failed"
[[ -x $SPOOLLOCK && -x $APPEND ]] || die "built binaries not found under $TARGET/release"

HAVE_DOTLOCKFILE=yes HAVE_PROCMAIL=yes
command -v dotlockfile >/dev/null || { HAVE_DOTLOCKFILE=no; say "dotlockfile is MISSING (apt-get install liblockfile-bin): its rows are n/a"; }
command -v procmail >/dev/null || { HAVE_PROCMAIL=no; say "procmail is MISSING (apt-get install procmail): its rows are n/a"; }

BASE=${1:-/var/tmp}
[[ -d $BASE ]] || die "$BASE is not a directory"
WORK=$(mktemp -d "$BASE/spoollock-mailbox.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
chmod 755 "$WORK" # procmail wants its rcfile's directory not world-writable
FSTYPE=$(stat -f -c %T "$WORK" 2>/dev/null || echo unknown)
MBOX=$WORK/mbox

# The message (no From line, for spoollock), the mbox entry (From line,
# message, blank line: what the shell appends) and the message with its
# From line (what an MTA hands to procmail -m).
MSG=$WORK/message ENTRY=$WORK/entry MBOXMSG=$WORK/mboxmsg
{
	printf 'From: alice@example.org\nTo: bob@example.org\nSubject: benchmark\n'
	printf 'Message-ID: <bench@example.org>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n\n'
	for ((i = 0; i < BODY_LINES; i++)); do
		printf 'Line %03d of a message of typical size, some text to fill it.\n' "$i"
	done
} >"$MSG"
FROM_LINE='From bench@example.org Mon Jan  1 00:00:00 2024'
{ echo "$FROM_LINE"; cat "$MSG"; echo; } >"$ENTRY"
{ echo "$FROM_LINE"; cat "$MSG"; } >"$MBOXMSG"
printf ':0:\n%s\n' "$MBOX" >"$WORK/procmail.rc"
printf 'LOCKSLEEP=1\n:0:\n%s\n' "$MBOX" >"$WORK/procmail1.rc"

# --- the writers: each gets the number of messages to append ----------------

w_lib() { "$APPEND" "$MBOX" "$MSG" "$1" bench@example.org; }
w_deliver() {
	local i
	for ((i = 0; i < $1; i++)); do
		"$SPOOLLOCK" deliver -q --from bench@example.org "$MBOX" <"$MSG" || return 1
	done
}
w_dotlockfile() {
	local i
	for ((i = 0; i < $1; i++)); do
		dotlockfile -l -r 1000 "$MBOX.lock" || return 1
		cat "$ENTRY" >>"$MBOX"
		dotlockfile -u "$MBOX.lock"
	done
}
w_dotlockfile_spin() {
	local i
	for ((i = 0; i < $1; i++)); do
		until dotlockfile -q -r 0 -l "$MBOX.lock"; do sleep 0.01; done
		cat "$ENTRY" >>"$MBOX"
		dotlockfile -u "$MBOX.lock"
	done
}
w_procmail() {
	local i
	for ((i = 0; i < $1; i++)); do procmail -m "$WORK/procmail.rc" <"$MBOXMSG" || return 1; done
}
w_procmail1() {
	local i
	for ((i = 0; i < $1; i++)); do procmail -m "$WORK/procmail1.rc" <"$MBOXMSG" || return 1; done
}

# measure NAME PER-WRITER WRITER-FUNCTION: one timed run; appends its
# seconds to RUNS[NAME] and sets TOTAL[NAME]; CHECK[NAME] stays "ok" only
# if in every run each writer succeeded and the mailbox ends up with every
# message (a From line each), a blank line at the end, and no lock left.
declare -A RUNS TOTAL CHECK
measure() {
	local name=$1 per=$2 fn=$3 start end w fail=0 pids=()
	rm -f "$MBOX" "$MBOX.lock"
	(umask 077 && : >"$MBOX") # an existing mailbox, as in a spool
	say "  $name: $WRITERS writers x $per messages ..."
	start=$EPOCHREALTIME
	for ((w = 0; w < WRITERS; w++)); do
		"$fn" "$per" &
		pids+=($!)
	done
	for w in "${pids[@]}"; do wait "$w" || fail=1; done
	end=$EPOCHREALTIME
	local expected=$((WRITERS * per)) found
	found=$(grep -c '^From ' "$MBOX" || true)
	TOTAL[$name]=$expected
	RUNS[$name]+="$(calc %.3f "$end - $start") "
	if ((fail == 0 && found == expected)) && [[ ! -e $MBOX.lock ]] &&
		cmp -s <(tail -c 2 "$MBOX") <(printf '\n\n'); then
		CHECK[$name]=${CHECK[$name]:-ok}
	else
		CHECK[$name]="BAD: $found/$expected messages, writer failed=$fail"
		[[ ! -e $MBOX.lock ]] || CHECK[$name]+=", lock left"
	fi
}
median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'; }

say "appending to $MBOX ($FSTYPE):"
# The fast writers alternate, ROUNDS times, so that noise from the rest of
# the machine falls on all of them; the median run counts.
for ((r = 1; r <= ROUNDS; r++)); do
	say " round $r of $ROUNDS"
	measure spoollock-lib "$MESSAGES" w_lib
	measure spoollock-deliver "$MESSAGES" w_deliver
	[[ $HAVE_DOTLOCKFILE == no ]] || measure dotlockfile-spin "$MESSAGES" w_dotlockfile_spin
done
if [[ $HAVE_DOTLOCKFILE == yes ]]; then
	say "    (next: liblockfile's own waits sleep 5 s and more on a busy lock: takes a while)"
	measure dotlockfile "$SLOW_MESSAGES" w_dotlockfile
fi
if [[ $HAVE_PROCMAIL == yes ]]; then
	say "    (next: procmail sleeps LOCKSLEEP=8 s on a busy lock: takes a while)"
	measure procmail "$SLOW_MESSAGES" w_procmail
	measure procmail-locksleep1 "$SLOW_MESSAGES" w_procmail1
fi
declare -A SECS RATE
for name in "${!RUNS[@]}"; do
	SECS[$name]=$(median <<<"${RUNS[$name]}")
	RATE[$name]=$(calc %.1f "${TOTAL[$name]} / ${SECS[$name]}")
done

# --- the table ----------------------------------------------------------------

row() { printf '%-22s %9s %10s %12s %18s %12s  %s\n' "$@"; }
echo
echo "mailbox append throughput, $WRITERS concurrent writers, one mbox: $(uname -sr), $(nproc) CPUs"
echo "directory: $WORK ($FSTYPE); message: $(wc -c <"$MSG") bytes"
echo
row "writer" "messages" "seconds" "messages/s" "spoollock-lib is" "deliver is" "check"
row "------" "--------" "-------" "----------" "----------------" "----------" "-----"
lib=${RATE[spoollock-lib]} dlv=${RATE[spoollock-deliver]}
for name in spoollock-lib spoollock-deliver dotlockfile-spin dotlockfile procmail procmail-locksleep1; do
	if [[ -z ${RATE[$name]:-} ]]; then
		row "$name" n/a n/a n/a n/a n/a "not installed"
		continue
	fi
	rate=${RATE[$name]}
	row "$name" "${TOTAL[$name]}" "${SECS[$name]}" "$rate" \
		"$(calc %.2f "$lib / $rate")x" "$(calc %.2f "$dlv / $rate")x" "${CHECK[$name]}"
	[[ $(wc -w <<<"${RUNS[$name]}") -le 1 ]] || echo "    (runs: ${RUNS[$name]}s; the median counts)"
done
echo
echo "Ratios: the spoollock writer's messages/s divided by that row's (above 1: spoollock is faster)."
echo "spoollock fdatasyncs each message before unlocking; cat and procmail do not."
bad=0
for name in "${!CHECK[@]}"; do [[ ${CHECK[$name]} == ok ]] || bad=1; done
exit $bad
