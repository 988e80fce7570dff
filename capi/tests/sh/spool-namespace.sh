# A mail spool of its own, for Debian's unmodified binaries on spoollock's
# liblockfile. Run as root under `unshare -m --propagation private`, so
# that every mount below is seen by this process tree only:
#
#   /dev                    a tmpfs with the usual devices and a /dev/log
#                           served by an rsyslogd of our own (the helper
#                           refuses to run without its audit trail)
#   /var/mail               a tmpfs, root:mail 2775, as on Debian
#   /usr/libexec/spoollock  the helper at its built-in path, root:mail 2755
#   liblockfile.so.1        spoollock's library, bind-mounted over the
#                           system's file (setgid programs ignore
#                           LD_LIBRARY_PATH; this they cannot ignore)
#
# `real_lib CMD...` runs CMD in a nested namespace without that bind
# mount: Debian's liblockfile, the same /var/mail and /dev/log.
#
# Environment: S (a scratch directory prepared by the test: bin/, lib/,
# entry/, msg/), HELPER, SPOOLLOCK (binaries), U (the unprivileged
# login), PHASES (which of the phases below to run). Results go to
# $S/results as key=value lines, with files beside it; the test asserts
# on them. Every wait is bounded.
set -u

R=$S/results
: > "$R"
say() { printf '%s=%s\n' "$1" "$2" >> "$R"; }
die() { echo "spool-namespace: $*" >&2; exit 90; }

# Up to 20 s for a condition (an eval'ed shell expression).
wait_until() {
	n=0
	until eval "$1"; do
		n=$((n + 1))
		[ $n -le 2000 ] || return 1
		sleep 0.01
	done
}

base=/run/spoollock-capi-test.$$
mkdir -p "$base" || die "mkdir $base"
mount -t tmpfs -o mode=0755 capi-base "$base" || die "mount $base"

# --- /dev and the audit trail ------------------------------------------------
mount -t tmpfs -o mode=0755 capi-dev /dev || die "mount /dev"
for dev in null:3 zero:5 full:7 random:8 urandom:9; do
	mknod -m 666 "/dev/${dev%:*}" c 1 "${dev#*:}" || die "mknod $dev"
done
ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout
ln -s /proc/self/fd/2 /dev/stderr
cat > "$base/rsyslog.conf" <<EOF
global(workDirectory="$base")
module(load="imuxsock" SysSock.Name="/dev/log" SysSock.RateLimit.Interval="0")
template(name="audit" type="string" string="%syslogfacility-text%.%syslogseverity-text% %syslogtag%%msg%\n")
mail.*;authpriv.* action(type="omfile" file="$S/audit.log" template="audit")
EOF
rsyslogd -n -f "$base/rsyslog.conf" -i "$base/rsyslogd.pid" </dev/null >/dev/null 2>&1 &
syslog=$!
trap 'kill $syslog 2>/dev/null; wait $syslog 2>/dev/null' EXIT
wait_until '[ -S /dev/log ]' || die "rsyslogd made no /dev/log"

# --- the spool, the helper, the library ---------------------------------------
mount -t tmpfs -o mode=2775 capi-spool /var/mail || die "mount /var/mail"
chown root:mail /var/mail && chmod 2775 /var/mail || die "chown /var/mail"
box=/var/mail/$U
: > "$box" && chown "$U:mail" "$box" && chmod 660 "$box" || die "mailbox"

# Only a mount point on the host; what is mounted on it is ours.
[ -d /usr/libexec/spoollock ] || mkdir -p /usr/libexec/spoollock || die "mkdir libexec"
mount -t tmpfs -o mode=0755 capi-helper /usr/libexec/spoollock || die "mount libexec"
cp "$HELPER" /usr/libexec/spoollock/spoollock-helper &&
	chown root:mail /usr/libexec/spoollock/spoollock-helper &&
	chmod 2755 /usr/libexec/spoollock/spoollock-helper || die "install helper"

system_lib=$(ldd /usr/bin/lockfile-create | awk '/liblockfile\.so\.1/ { print $3 }')
[ -n "$system_lib" ] || die "lockfile-create links no liblockfile.so.1"
system_lib=$(readlink -f "$system_lib")
say system_lib "$system_lib"
cp "$S/lib/liblockfile.so" "$base/liblockfile.so.1" && chmod 755 "$base/liblockfile.so.1" || die "copy library"
mount --bind "$base/liblockfile.so.1" "$system_lib" || die "bind library"
say our_lib "$(stat -c '%d %i' "$base/liblockfile.so.1")"

# Programs installed setgid mail for the tests.
mkdir -p "$base/bin" || die "mkdir bin"
if [ -e "$S/bin/maillocker" ]; then
	cp "$S/bin/maillocker" "$base/bin/" &&
		chown root:mail "$base/bin/maillocker" && chmod 2755 "$base/bin/maillocker" || die "maillocker"
fi

home=$S/home
mkdir -p "$home" "$S/evil" && chown "$U" "$home" "$S/evil" || die "home"

as_user() {
	setpriv --reuid="$U" --regid="$U" --init-groups \
		env -i HOME="$home" PATH=/usr/bin:/bin LOGNAME="$U" USER="$U" "$@"
}
# In the background, as the user: $! is the program's own pid (setpriv and
# env exec it), for /proc/$!/maps and kill.
user_bg() {
	setpriv --reuid="$U" --regid="$U" --init-groups \
		env -i HOME="$home" PATH=/usr/bin:/bin LOGNAME="$U" USER="$U" "$@" &
}
real_lib() {
	unshare -m --propagation private sh -c 'umount "$0" && exec "$@"' "$system_lib" "$@"
}

# Save the liblockfile lines of /proc/PID/maps, once the process has them.
maps_of() { # NAME PID
	wait_until "grep -q liblockfile /proc/$2/maps 2>/dev/null" || { say "maps_$1" missing; return; }
	grep liblockfile "/proc/$2/maps" > "$S/maps-$1"
	say "maps_$1" saved
}

# --- phase: lockfile-progs -----------------------------------------------------
phase_progs() {
	# On the spool (through the helper) ...
	as_user lockfile-create --retry 0 "$box"; say progs_create $?
	cp "$box.lock" "$S/progs-lock-content" 2>/dev/null
	stat -c '%U:%G %a' "$box.lock" > "$S/progs-lock-owner" 2>/dev/null
	as_user lockfile-check "$box"; say progs_check $?
	as_user lockfile-touch --oneshot "$box"; say progs_touch $?
	user_bg lockfile-touch "$box"; t=$!
	maps_of lockfile-touch $t
	# Its first touch done, not killed in the middle of one.
	sleep 0.5
	kill $t; wait $t 2>/dev/null
	as_user lockfile-remove "$box" 2> "$S/progs-remove-err"; say progs_remove $?
	[ -e "$box.lock" ]; say progs_lock_after $?
	as_user lockfile-check "$box"; say progs_check_after $?
	real_lib setpriv --reuid="$U" --regid="$U" --init-groups env -i lockfile-check "$box"
	say progs_check_after_real $?

	# ... and waiting there: lockfile-create on a held lock, released 1 s later.
	as_user "$SPOOLLOCK" lock -q "$box" || say progs_hold failed
	user_bg lockfile-create --retry 2 "$box"; c=$!
	maps_of lockfile-create $c
	sleep 1
	as_user "$SPOOLLOCK" unlock -q "$box"
	start=$(date +%s%N)
	wait $c; say progs_waited_create $?
	say progs_wait_after_release_ms $((($(date +%s%N) - start) / 1000000))
	as_user lockfile-remove "$box"; say progs_remove2 $?

	# mail-lock, setgid mail, with a hostile environment: none of it may
	# choose the helper, the spool or the lock.
	cat > "$S/evil/helper" <<EOF
#!/bin/sh
touch "$S/evil/helper-ran"
EOF
	chmod 755 "$S/evil/helper"
	as_user "$SPOOLLOCK" lock -q "$box" || say maillock_hold failed
	user_bg env MAIL="$S/evil/$U" SPOOLLOCK_HELPER="$S/evil/helper" \
		LD_LIBRARY_PATH="$S/evil" mail-lock --retry 2; m=$!
	maps_of mail-lock $m
	sleep 1
	as_user "$SPOOLLOCK" unlock -q "$box"
	wait $m; say mail_lock $?
	cp "$box.lock" "$S/mail-lock-content" 2>/dev/null
	as_user mail-touchlock --oneshot; say mail_touchlock $?
	user_bg mail-touchlock; t=$!
	maps_of mail-touchlock $t
	sleep 0.5
	kill $t; wait $t 2>/dev/null
	as_user mail-unlock; say mail_unlock $?
	[ -e "$box.lock" ]; say mail_lock_after $?
	[ -e "$S/evil/helper-ran" ]; say evil_helper_ran $?
	ls -A "$S/evil" > "$S/evil-listing"

	# A setgid program's maillock() never takes $MAIL: ours locks the spool ...
	as_user env MAIL="$S/evil/$U" "$base/bin/maillocker" "$U" > "$S/maillocker-ours"
	[ -e "$box.lock" ]; say maillocker_ours_spool $?
	[ -e "$S/evil/$U.lock" ]; say maillocker_ours_evil $?
	rm -f "$box.lock" "$S/evil/$U.lock"
	# ... Debian's follows it.
	real_lib setpriv --reuid="$U" --regid="$U" --init-groups env -i HOME="$home" \
		PATH=/usr/bin:/bin MAIL="$S/evil/$U" "$base/bin/maillocker" "$U" > "$S/maillocker-real"
	[ -e "$box.lock" ]; say maillocker_real_spool $?
	[ -e "$S/evil/$U.lock" ]; say maillocker_real_evil $?
	rm -f "$box.lock" "$S/evil/$U.lock"

	# L_PID in the spool: a fresh bare-pid lock of a dead process.
	sh -c 'exit 0' & dead=$!; wait $dead
	for lib in ours real; do
		printf '%s\n' "$dead" > "$box.lock" && chown "$U:mail" "$box.lock"
		if [ $lib = ours ]; then
			as_user "$S/bin/driver" create "$box.lock" 0 16 > "$S/lpid-$lib"
		else
			real_lib setpriv --reuid="$U" --regid="$U" --init-groups env -i \
				"$S/bin/driver" create "$box.lock" 0 16 > "$S/lpid-$lib"
		fi
		rm -f "$box.lock"
	done

	# lockfile_create, lockfile_touch and maillock through the helper.
	as_user "$S/bin/driver" create "$box.lock" 0 0 touch "$box.lock" check "$box.lock" 0 \
		remove "$box.lock" remove "$box.lock" maillock "$U" 0 touchlock mailunlock \
		> "$S/driver-spool"
	# A forked child removes the lock its parent made through the helper.
	as_user "$S/bin/driver" create "$box.lock" 0 0 forkremove "$box.lock" remove "$box.lock" \
		> "$S/driver-spool-fork"
	# ... and with standard error closed: the helper must still run.
	as_user "$S/bin/driver" create "$box.lock" 0 0 remove "$box.lock" \
		> "$S/driver-spool-no-stderr" 2>&-
	# `spoollock dotlockfile` on the spool: through the helper too.
	as_user "$SPOOLLOCK" dotlockfile -l -r 0 "$box.lock"; say sl_dotlockfile_lock $?
	as_user "$SPOOLLOCK" dotlockfile -c "$box.lock"; say sl_dotlockfile_check $?
	as_user "$SPOOLLOCK" dotlockfile -t "$box.lock"; say sl_dotlockfile_touch $?
	as_user "$SPOOLLOCK" dotlockfile -u "$box.lock"; say sl_dotlockfile_unlock $?
	as_user "$SPOOLLOCK" dotlockfile -r 0 -m -P sh -c 'test -e "/var/mail/$LOGNAME.lock"'
	say sl_dotlockfile_command $?
	ls -A /var/mail > "$S/spool-after-progs"
}

# --- phase: bsd-mailx ------------------------------------------------------------
phase_mailx() {
	# Delivery: bsd-mailx hands the message to its `sendmail`, here
	# `spoollock deliver` into the sender's own mailbox.
	cat > "$S/sendmail" <<EOF
#!/bin/sh
exec "$SPOOLLOCK" deliver --mailbox --from "\$LOGNAME@localhost"
EOF
	chmod 755 "$S/sendmail"
	printf 'set sendmail=%s\nset hold\n' "$S/sendmail" > "$S/mailrc"
	chmod 644 "$S/mailrc"
	for n in 1 2 3; do
		printf 'body of message %s\n' "$n" |
			as_user env MAILRC="$S/mailrc" bsd-mailx -s "message $n" "$U"
		say "mailx_send_$n" $?
	done
	cp "$box" "$S/mailx-after-send"
	# Reading: delete message 1, quit. bsd-mailx rewrites the mailbox with
	# the lock taken through our library (and the helper).
	rm -f "$S/mailx-fifo" && mkfifo "$S/mailx-fifo" && chmod 666 "$S/mailx-fifo"
	# Opened read-write first, so that neither side's open blocks.
	exec 7<> "$S/mailx-fifo"
	# (Not through user_bg: a command put in the background there would
	# read /dev/null, not the redirection of the function call.)
	setpriv --reuid="$U" --regid="$U" --init-groups \
		env -i HOME="$home" PATH=/usr/bin:/bin LOGNAME="$U" USER="$U" MAILRC="$S/mailrc" \
		bsd-mailx -N < "$S/mailx-fifo" > "$S/mailx-read-out" 2>&1 &
	r=$!
	maps_of bsd-mailx $r
	say mailx_pid $r
	printf 'd 1\nq\n' >&7
	exec 7>&-
	wait $r; say mailx_read $?
	cp "$box" "$S/mailx-after-read"
	ls -A /var/mail > "$S/spool-after-mailx"
	: > "$box"
}

# --- phase: contention ----------------------------------------------------------
# Writers on one mailbox, all at once: programs on spoollock's library and
# on Debian's, `spoollock deliver`, and dotlockfile (liblockfile linked
# statically). Each appends its entries $S/entry/WRITER-* (or delivers
# $S/msg/WRITER-*) with the mailbox's dotlock held.
writer() { # NAME
	name=$1
	start=$(date +%s%N)
	case $name in
	c-spoollock)
		as_user "$S/bin/appender" "$box.lock" "$box" 100 "$S"/entry/$name-* ;;
	c-liblockfile)
		real_lib setpriv --reuid="$U" --regid="$U" --init-groups env -i \
			"$S/bin/appender" "$box.lock" "$box" 100 "$S"/entry/$name-* ;;
	mail-lock-spoollock)
		as_user sh -c 'for f; do
			until mail-lock --retry 9; do sleep 0.01; done
			cat "$f" >> "/var/mail/$LOGNAME" || exit 1
			mail-unlock || exit 1
		done' sh "$S"/entry/$name-* ;;
	mail-lock-liblockfile)
		real_lib setpriv --reuid="$U" --regid="$U" --init-groups env -i LOGNAME="$U" \
			PATH=/usr/bin:/bin sh -c 'for f; do
			until mail-lock --retry 9; do sleep 0.01; done
			cat "$f" >> "/var/mail/$LOGNAME" || exit 1
			mail-unlock || exit 1
		done' sh "$S"/entry/$name-* ;;
	spoollock-deliver)
		as_user sh -c 'for f; do
			"$0" deliver --mailbox --timeout 250s --from deliver@peers.test < "$f" || exit 1
		done' "$SPOOLLOCK" "$S"/msg/$name-* ;;
	dotlockfile)
		as_user sh -c 'for f; do
			dotlockfile -l -r 100 "/var/mail/$LOGNAME.lock" || exit 1
			cat "$f" >> "/var/mail/$LOGNAME" || exit 1
			dotlockfile -u "/var/mail/$LOGNAME.lock" || exit 1
		done' sh "$S"/entry/$name-* ;;
	esac
	status=$?
	say "writer_$name" $status
	say "writer_${name}_ms" $((($(date +%s%N) - start) / 1000000))
}

phase_contention() {
	: > "$box"
	pids=
	for w in c-spoollock c-liblockfile mail-lock-spoollock mail-lock-liblockfile \
		spoollock-deliver dotlockfile; do
		writer $w & pids="$pids $!"
	done
	for p in $pids; do wait $p; done
	cp "$box" "$S/contention-mbox"
	ls -A /var/mail > "$S/spool-after-contention"
}

# --- phase: bench (figures, not assertions) -----------------------------------------
phase_bench() {
	for lib in ours real; do
		if [ $lib = ours ]; then
			as_user "$S/bin/bench" maillock "$U" "$BENCH_CYCLES" > "$S/bench-maillock-$lib"
		else
			real_lib setpriv --reuid="$U" --regid="$U" --init-groups env -i \
				"$S/bin/bench" maillock "$U" "$BENCH_CYCLES" > "$S/bench-maillock-$lib"
		fi
		say "bench_maillock_$lib" $?
	done
}

for phase in $PHASES; do
	"phase_$phase"
done
say done 1
