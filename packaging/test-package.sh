#!/usr/bin/env bash
# End-to-end test of the Debian package, as root on Debian (CI):
#
#   1. build the .deb (packaging/debian/build-deb.sh) and run lintian on it:
#      any error fails;
#      and packaging/rpm/spoollock.spec must parse (rpmspec -P);
#   2. dpkg -i: the helper is root:mail 2755 through a dpkg statoverride,
#      the CLI and the manual pages are installed;
#   3. as a freshly created unprivileged user, in a private mount namespace
#      with a tmpfs over /var/mail (root:mail 2775) and rsyslogd listening
#      on /dev/log (an overlay over /dev, so the host's /dev is untouched),
#      `spoollock run --mailbox -- sh -c 'echo x'` locks the user's mailbox
#      through the installed setgid helper: the lock exists while the
#      command runs, created by the helper (the user cannot write the spool
#      itself), and rsyslogd logs the grant (mail.info) and the release
#      (mail.info), and a refused request at authpriv.warning, both in a
#      mail+authpriv file and through the rsyslog snippet of docs/audit.md;
#   3b. spoollock's liblockfile.so.1, in a private mount namespace with its
#      own copy of /etc: installed in its private directory and used by no
#      program; opted in as README.Debian says (ld.so.conf.d + ldconfig),
#      lockfile-create, lockfile-touch and the setgid mail-lock load it;
#      opted out, they load Debian's again; opted in, the package's postrm
#      undoes it;
#   4. dpkg -r, then dpkg --purge: no file, directory or statoverride is
#      left; an administrator's own statoverride survives remove and goes
#      with purge.
#
# Exit status: 0 passed, 1 failed, 77 skipped (not root, not Debian, a tool
# missing: the reason is printed). Run it with `bash packaging/test-package.sh`;
# client/tests/packaging.rs runs it from `cargo test`.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
user="${SPOOLLOCK_PKGTEST_USER:-slpkgtest}"
helper=/usr/libexec/spoollock/spoollock-helper

say() { echo "test-package.sh: $*"; }
fail() { echo "test-package.sh: FAIL: $*" >&2; exit 1; }
# shellcheck source=packaging/test-lib.sh
. "$here/test-lib.sh"
skip() { echo "test-package.sh: SKIP: $*"; exit 77; }

[ "$(id -u)" -eq 0 ] || skip "needs root (dpkg -i, useradd, mount namespaces)"
command -v dpkg >/dev/null || skip "not a Debian system (no dpkg)"
missing=""
for tool in dpkg-deb dpkg-shlibdeps lintian rsyslogd unshare setpriv useradd mount findmnt strip gzip; do
    command -v "$tool" >/dev/null || missing="$missing $tool"
done
[ -z "$missing" ] || skip "missing:$missing (apt-get install dpkg-dev lintian rsyslog util-linux passwd binutils)"
getent group mail >/dev/null || fail "group mail does not exist"

work="$(mktemp -d /tmp/spoollock-pkgtest.XXXXXX)"
chmod 0755 "$work"
trap 'rm -rf "$work"' EXIT

# A package left over from an interrupted run (or installed by hand) would
# make every check below meaningless.
if dpkg-query -W -f='${Status}' spoollock 2>/dev/null | grep -qv "not-installed"; then
    say "purging a spoollock package already installed"
    dpkg --purge spoollock >/dev/null
fi
if dpkg-statoverride --list "$helper" >/dev/null 2>&1; then
    say "removing a leftover statoverride of $helper"
    dpkg-statoverride --remove "$helper"
fi

# ---- 1. build and lintian ------------------------------------------------
say "building the package"
deb="$(bash "$repo/packaging/debian/build-deb.sh" -o "$work" | tail -n1)"
[ -f "$deb" ] || fail "build-deb.sh produced no package"
say "built $(basename "$deb")"

say "lintian $(lintian --version | awk '{print $2}')"
set +e
lintian --fail-on error --display-info --show-overrides "$deb" >"$work/lintian.txt" 2>&1
lintian_rc=$?
set -e
sed 's/^/  /' "$work/lintian.txt"
errors="$(grep -c '^E: ' "$work/lintian.txt" || true)"
warnings="$(grep -c '^W: ' "$work/lintian.txt" || true)"
say "lintian: $errors error(s), $warnings warning(s)"
[ "$lintian_rc" -eq 0 ] && [ "$errors" -eq 0 ] || fail "lintian reported errors (exit $lintian_rc)"

# The RPM spec: it must parse, with the helper setgid mail.
if command -v rpmspec >/dev/null; then
    rpmspec -P "$repo/packaging/rpm/spoollock.spec" >"$work/spec.txt" 2>&1 ||
        { cat "$work/spec.txt"; fail "rpmspec -P cannot parse packaging/rpm/spoollock.spec"; }
    grep -qE '^%attr\(2755,root,mail\) /usr/libexec/spoollock/spoollock-helper$' "$work/spec.txt" ||
        fail "the RPM spec does not install the helper %attr(2755,root,mail)"
    spec_version="$(rpmspec -q --srpm --qf '%{VERSION}' "$repo/packaging/rpm/spoollock.spec")"
    [ "$spec_version" = "$(basename "$deb" | cut -d_ -f2 | sed 's/-[^-]*$//')" ] ||
        fail "the RPM spec's version $spec_version differs from the .deb's"
    say "rpmspec -P: the spec parses, helper %attr(2755,root,mail), version $spec_version"
elif [ -n "${CI:-}" ]; then
    fail "rpmspec missing (apt-get install rpm)"
else
    say "rpmspec missing (apt-get install rpm): not checking the RPM spec"
fi

# ---- 2. install -----------------------------------------------------------
expect_mode() { # path owner:group mode
    local got
    got="$(stat -c '%U:%G %a' "$1")"
    [ "$got" = "$2 $3" ] || fail "$1 is $got, expected $2 $3"
}

say "dpkg -i"
dpkg -i "$deb" >"$work/dpkg-i.txt" 2>&1 || { cat "$work/dpkg-i.txt"; fail "dpkg -i failed"; }
expect_mode "$helper" root:mail 2755
[ "$(dpkg-statoverride --list "$helper")" = "root mail 2755 $helper" ] ||
    fail "no statoverride root mail 2755 for $helper"
expect_mode /usr/bin/spoollock root:root 755
for f in /usr/share/man/man1/spoollock.1.gz /usr/share/man/man1/spoollock-run.1.gz \
    /usr/share/man/man8/spoollock-helper.8.gz /usr/share/doc/spoollock/copyright \
    /usr/share/doc/spoollock/SECURITY.md /usr/share/doc/spoollock/changelog.Debian.gz; do
    [ -f "$f" ] || fail "$f is not installed"
done
# Reinstalling (as an upgrade does) keeps the mode: dpkg applies the
# statoverride when it unpacks.
dpkg -i "$deb" >"$work/dpkg-i.txt" 2>&1 || { cat "$work/dpkg-i.txt"; fail "dpkg -i (again) failed"; }
expect_mode "$helper" root:mail 2755
dpkg -L spoollock >"$work/files.txt"
say "installed: helper root:mail 2755 (statoverride), kept by a reinstall; $(grep -c . "$work/files.txt") paths"

# ---- 3. run as an unprivileged user --------------------------------------
ensure_user "$user"
help="$(setpriv --reuid="$user" --regid="$user" --init-groups --reset-env -- "$helper" --help)" ||
    fail "spoollock-helper --help failed"
for word in /dev/log "facility mail" "facility authpriv"; do
    echo "$help" | grep -qF "$word" || fail "spoollock-helper --help does not say '$word'"
done
say "spoollock-helper --help says where it logs (/dev/log, mail, authpriv)"
# Never a member of group mail: the helper must be what makes the lock.
if id -nG "$user" | tr ' ' '\n' | grep -qx mail; then
    fail "test user $user is in group mail"
fi
mail_gid="$(getent group mail | cut -d: -f3)"

snippet="$work/snippet.conf"
sed -n '/^<!-- rsyslog-snippet-begin -->$/,/^<!-- rsyslog-snippet-end -->$/p' "$repo/docs/audit.md" |
    sed '/^<!--/d; /^```/d' |
    sed "s|/var/log/spoollock-helper.log|$work/ns/spoollock-helper.log|" >"$snippet"
grep -q 'spoollock-helper' "$snippet" || fail "no rsyslog snippet between the markers in docs/audit.md"
# The imuxsock line the snippet needs (trusted properties: the sender's gid).
imuxsock="$work/imuxsock.conf"
sed -n '/^<!-- rsyslog-imuxsock-begin -->$/,/^<!-- rsyslog-imuxsock-end -->$/p' "$repo/docs/audit.md" |
    sed '/^<!--/d; /^```/d' >"$imuxsock"
grep -q 'imuxsock' "$imuxsock" || fail "no imuxsock line between the markers in docs/audit.md"

cat >"$work/inner.sh" <<'INNER'
set -euo pipefail
work="$1"; user="$2"; mail_gid="$3"
ns="$work/ns"
say() { echo "test-package.sh: [ns] $*"; }
fail() { echo "test-package.sh: FAIL: [ns] $*" >&2; exit 1; }

# The real spool layout, private to this namespace.
mount -t tmpfs -o mode=2775 spool /var/mail
chown root:mail /var/mail
chmod 2775 /var/mail
# A mailbox as Debian makes them: user:mail 0660.
install -o "$user" -g mail -m 0660 /dev/null "/var/mail/$user"

# /dev/log: an overlay over /dev (device nodes still work), so rsyslogd's
# socket lives in this namespace only; /dev's submounts are bound back.
mkdir -p "$ns"
mount -t tmpfs -o mode=0755 nsfiles "$ns"
mkdir -p "$ns/olddev" "$ns/up" "$ns/wk" "$ns/rsyslog"
mount --rbind /dev "$ns/olddev"
mount -t overlay -o "lowerdir=$ns/olddev,upperdir=$ns/up,workdir=$ns/wk" nsdev /dev
for sub in $(findmnt -rn -o TARGET | grep "^$ns/olddev/" | sed "s|^$ns/olddev/||" | sort -u); do
    [ -d "/dev/$sub" ] && mount --rbind "$ns/olddev/$sub" "/dev/$sub" 2>/dev/null || true
done
[ ! -e /dev/log ] || rm -f /dev/log

cat >"$ns/rsyslog.conf" <<EOF
global(workDirectory="$ns/rsyslog")
$(cat "$work/imuxsock.conf")
template(name="FacPri" type="string"
         string="%syslogfacility-text%.%syslogseverity-text% %syslogtag%%msg%\n")
mail.*;authpriv.* action(type="omfile" file="$ns/mail-auth.log" template="FacPri")
EOF
cat "$work/snippet.conf" >>"$ns/rsyslog.conf"
rsyslogd -n -f "$ns/rsyslog.conf" -i "$ns/rsyslogd.pid" >"$ns/rsyslogd.out" 2>&1 &
rsyslog_pid=$!
trap 'kill "$rsyslog_pid" 2>/dev/null || true; wait "$rsyslog_pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -S /dev/log ] && break; sleep 0.05; done
[ -S /dev/log ] || { cat "$ns/rsyslogd.out"; fail "rsyslogd did not create /dev/log"; }
logger -p mail.info -t spoollock-pkgtest "syslog-ready"
for _ in $(seq 100); do grep -q syslog-ready "$ns/mail-auth.log" 2>/dev/null && break; sleep 0.05; done
grep -q syslog-ready "$ns/mail-auth.log" || { cat "$ns/rsyslogd.out"; fail "rsyslogd does not log"; }
say "rsyslogd $rsyslog_pid listens on /dev/log"

as_user() {
    setpriv --reuid="$user" --regid="$user" --init-groups --reset-env -- "$@"
}

# The user cannot create files in the spool: only the helper can lock.
if as_user sh -c 'echo > /var/mail/probe' 2>/dev/null; then
    fail "$user can write /var/mail itself; the test would prove nothing"
fi

# The command of the issue, exactly.
out="$(as_user /usr/bin/spoollock run --mailbox -- sh -c 'echo x')" ||
    fail "spoollock run --mailbox exited $?"
[ "$out" = x ] || fail "spoollock run printed '$out', expected 'x'"
[ ! -e "/var/mail/$user.lock" ] || fail "the lock was left behind"
say "spoollock run --mailbox -- sh -c 'echo x' printed x and released the lock"

# Again, looking from inside the command: the lock is there, made by the
# user's setgid helper, a child of spoollock holding group mail in its
# saved set-group-ID only.
cat >"$ns/probe.sh" <<'PROBE'
lock="/var/mail/$USER.lock"
[ -f "$lock" ] || { echo "no $lock while the command runs"; exit 10; }
stat -c 'lock %U:%G %a' "$lock"
helper_pid=""
for st in /proc/[0-9]*/stat; do
    read -r pid comm _state ppid _rest <"$st" 2>/dev/null || continue
    if [ "$ppid" = "$PPID" ] && [ "$comm" = "(spoollock-helpe)" ]; then helper_pid="$pid"; fi
done
[ -n "$helper_pid" ] || { echo "no spoollock-helper child of spoollock ($PPID)"; exit 11; }
echo "helper $helper_pid $(grep '^Gid:' "/proc/$helper_pid/status")"
echo "first-line $(head -n1 "$lock")"
PROBE
chmod 0755 "$ns/probe.sh"
probe="$(as_user /usr/bin/spoollock run --mailbox -- /bin/sh "$ns/probe.sh")" ||
    { echo "$probe"; fail "the probe inside spoollock run failed"; }
echo "$probe" | sed 's/^/  /'
echo "$probe" | grep -qx "lock $user:mail 644" || fail "the lock is not $user:mail 0644"
gids="$(echo "$probe" | sed -n 's/^helper [0-9]* Gid:\s*//p')"
read -r real effective saved fs <<<"$gids"
user_gid="$(id -g "$user")"
[ "$real" = "$user_gid" ] || fail "helper real gid $real, expected $user_gid"
[ "$saved" = "$mail_gid" ] || fail "helper saved gid $saved, expected mail ($mail_gid): not setgid?"
[ "$effective" = "$user_gid" ] || fail "helper effective gid $effective while idle, expected $user_gid"
helper_pid="$(echo "$probe" | sed -n 's/^helper \([0-9]*\) .*/\1/p')"
echo "$probe" | grep -qx "first-line $helper_pid" || fail "the lock does not name the helper's pid"
say "the lock was made by spoollock-helper $helper_pid (gids real=$real effective=$effective saved=$saved)"

# Another user's mailbox: the client refuses before asking the helper.
set +e
refused="$(as_user /usr/bin/spoollock lock --no-wait /var/mail/root 2>&1)"
refused_rc=$?
set -e
[ "$refused_rc" -ne 0 ] || fail "locking /var/mail/root as $user succeeded"
[ ! -e /var/mail/root.lock ] || fail "/var/mail/root.lock was created"
say "locking root's mailbox: refused (exit $refused_rc: $refused)"

# A refusal by the helper's policy: the user's mailbox now belongs to root.
chown root "/var/mail/$user"
set +e
refused="$(as_user /usr/bin/spoollock lock --mailbox --no-wait 2>&1)"
refused_rc=$?
set -e
chown "$user" "/var/mail/$user"
[ "$refused_rc" -ne 0 ] || fail "locking a mailbox owned by root succeeded"
[ ! -e "/var/mail/$user.lock" ] || fail "a lock was created for a mailbox owned by root"
say "locking a mailbox owned by someone else: refused by the helper (exit $refused_rc: $refused)"

# The audit trail: wait for the records, then check them.
wait_for() { # file pattern
    for _ in $(seq 100); do grep -qE "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
    return 1
}
log="$ns/mail-auth.log"
grant="^mail\.info spoollock-helper\[[0-9]+\]: op=lock result=granted uid=[0-9]+ login=$user client_pid=[0-9]+ .*spool=/var/mail lock=$user\.lock mode=session"
release="^mail\.info spoollock-helper\[[0-9]+\]: op=release result=released uid=[0-9]+ login=$user client_pid=[0-9]+ .*spool=/var/mail lock=$user\.lock .*trigger="
refusal="^authpriv\.warning spoollock-helper\[[0-9]+\]: op=lock result=bad-mailbox uid=[0-9]+ login=$user client_pid=[0-9]+ .*error="
for what in grant release refusal; do
    wait_for "$log" "${!what}" || { sed 's/^/  /' "$log"; fail "no $what record in the mail+authpriv log"; }
done
[ "$(grep -cE "$grant" "$log")" -eq 2 ] || { sed 's/^/  /' "$log"; fail "expected 2 grants"; }
[ "$(grep -cE "$release" "$log")" -eq 2 ] || { sed 's/^/  /' "$log"; fail "expected 2 releases"; }
grep -E "spoollock-helper\[$helper_pid\]: op=lock result=granted" "$log" >/dev/null ||
    fail "no grant logged by helper $helper_pid"
say "rsyslogd logged grant and release (mail.info) and the refusal (authpriv.warning):"
grep 'spoollock-helper' "$log" | sed 's/^/  /'
own="$ns/spoollock-helper.log"
wait_for "$own" "op=lock result=bad-mailbox" || fail "the docs/audit.md snippet did not route the refusal"
[ "$(grep -c 'spoollock-helper\[' "$own")" -eq "$(grep -c 'spoollock-helper\[' "$log")" ] ||
    fail "the docs/audit.md snippet's file differs from the mail+authpriv log"
grep -q 'syslog-ready' "$own" && fail "the docs/audit.md snippet routed other programs' messages"
say "the rsyslog snippet of docs/audit.md routed all $(grep -c . "$own") records to its own file"
INNER

say "running as $user in a private mount namespace"
unshare -m --propagation private bash "$work/inner.sh" "$work" "$user" "$mail_gid" ||
    fail "the run as $user failed"

# ---- 3b. spoollock's liblockfile: opt in, used, opt out, removed -------------
# In a private mount namespace whose /etc is a copy on a tmpfs: the opt-in
# and ldconfig change only that copy, so the host keeps Debian's
# liblockfile for everything else running meanwhile.
libdir="$(dirname "$(grep '/spoollock/liblockfile\.so\.1$' "$work/files.txt")")"
[ -n "$libdir" ] && [ -f "$libdir/liblockfile.so.1" ] || fail "spoollock's liblockfile.so.1 is not installed"
[ "$(readelf -d "$libdir/liblockfile.so.1" | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')" = liblockfile.so.1 ] ||
    fail "$libdir/liblockfile.so.1 has not the SONAME liblockfile.so.1"
[ -f /usr/share/man/man3/spoollock-liblockfile.3.gz ] || fail "spoollock-liblockfile(3) is not installed"
if command -v lockfile-create >/dev/null; then
    cat >"$work/optin.sh" <<'OPTIN'
set -euo pipefail
work="$1"; libdir="$2"
say() { echo "test-package.sh: [optin] $*"; }
fail() { echo "test-package.sh: FAIL: [optin] $*" >&2; exit 1; }
mkdir -p "$work/etc"
mount -t tmpfs -o mode=0755 etc "$work/etc"
cp -a /etc/. "$work/etc/"
mount --bind "$work/etc" /etc
optin=/etc/ld.so.conf.d/00-spoollock-liblockfile.conf
loaded() { ldd /usr/bin/lockfile-create | awk '/liblockfile\.so\.1/ { print $3 }'; }
[ "$(loaded)" != "$libdir/liblockfile.so.1" ] || fail "spoollock's library is used before the opt-in"
say "before: lockfile-create loads $(loaded)"

# Opt in, as README.Debian says.
ln -s /usr/share/spoollock/00-spoollock-liblockfile.conf /etc/ld.so.conf.d/
ldconfig
[ "$(loaded)" = "$libdir/liblockfile.so.1" ] || fail "after the opt-in lockfile-create loads $(loaded)"
ldd /usr/bin/mail-lock | grep -q "$libdir/liblockfile.so.1" || fail "the setgid mail-lock does not load it"
# Programs use it: the lock lockfile-create makes is spoollock's, and a
# running lockfile-touch has it mapped.
box="$work/optin-box"
lockfile-create --retry 0 "$box" || fail "lockfile-create failed"
grep -q '^host=' "$box.lock" || fail "lockfile-create made no spoollock lock: $(cat "$box.lock")"
lockfile-touch "$box" & toucher=$!
for _ in $(seq 200); do grep -q liblockfile "/proc/$toucher/maps" 2>/dev/null && break; sleep 0.05; done
grep -q "$libdir/liblockfile.so.1" "/proc/$toucher/maps" || fail "lockfile-touch did not map $libdir/liblockfile.so.1"
kill "$toucher"; wait "$toucher" 2>/dev/null || true
lockfile-remove "$box" || fail "lockfile-remove failed"
[ ! -e "$box.lock" ] || fail "lockfile-remove left the lock"
say "opted in: lockfile-create, lockfile-touch and mail-lock load $libdir/liblockfile.so.1"

# Opt out, as README.Debian says.
rm "$optin"
ldconfig
[ "$(loaded)" != "$libdir/liblockfile.so.1" ] || fail "still loaded after the opt-out"
lockfile-create --retry 0 "$box" || fail "lockfile-create (opted out) failed"
! grep -q '^host=' "$box.lock" || fail "opted out, lockfile-create still made a spoollock lock"
lockfile-remove "$box"
say "opted out: back to $(loaded)"

# Opted in, the package's removal opts out: its postrm, with the
# statoverride calls stubbed (the real ones are tested below, on the host).
ln -s /usr/share/spoollock/00-spoollock-liblockfile.conf /etc/ld.so.conf.d/
ldconfig
[ "$(loaded)" = "$libdir/liblockfile.so.1" ] || fail "not loaded after the second opt-in"
mkdir -p "$work/stub"
printf '#!/bin/sh\nexit 1\n' >"$work/stub/dpkg-statoverride"
chmod 0755 "$work/stub/dpkg-statoverride"
PATH="$work/stub:$PATH" sh /var/lib/dpkg/info/spoollock.postrm remove || fail "postrm remove failed"
[ ! -e "$optin" ] && [ ! -L "$optin" ] || fail "postrm left $optin"
[ "$(loaded)" != "$libdir/liblockfile.so.1" ] || fail "still loaded after the package's postrm"
say "the package's postrm removed the opt-in: back to $(loaded)"
OPTIN
    unshare -m --propagation private bash "$work/optin.sh" "$work" "$libdir" ||
        fail "the liblockfile opt-in test failed"
elif [ -n "${CI:-}" ]; then
    fail "lockfile-progs missing (apt-get install lockfile-progs)"
else
    say "lockfile-progs missing: not testing the liblockfile opt-in"
fi

# ---- 4. remove and purge --------------------------------------------------
check_gone() {
    local left=""
    while read -r path; do
        case "$path" in
            /. | /usr | /usr/bin | /usr/libexec | /usr/share | /usr/share/doc | /usr/share/man | \
                /usr/share/man/man1 | /usr/share/man/man3 | /usr/share/man/man8 | /usr/share/lintian | \
                /usr/share/lintian/overrides | /usr/lib | /usr/lib/*-*-*) continue ;;
        esac
        [ ! -e "$path" ] || left="$left $path"
    done <"$work/files.txt"
    [ -z "$left" ] || fail "left after $1:$left"
}

say "dpkg -r"
dpkg -r spoollock >/dev/null 2>&1 || fail "dpkg -r failed"
check_gone "dpkg -r"
! dpkg-statoverride --list "$helper" >/dev/null 2>&1 || fail "statoverride left after dpkg -r"
say "dpkg --purge"
dpkg --purge spoollock >/dev/null 2>&1 || fail "dpkg --purge failed"
dpkg-query -W -f='${Status}' spoollock 2>/dev/null | grep -qv "not-installed" &&
    fail "dpkg still knows spoollock after purge"
check_gone "dpkg --purge"
! dpkg-statoverride --list "$helper" >/dev/null 2>&1 || fail "statoverride left after purge"
say "remove and purge left no file, directory or statoverride"

# An administrator's override is respected, kept on remove, dropped on purge.
dpkg-statoverride --add root mail 2750 "$helper"
dpkg -i "$deb" >/dev/null 2>&1 || fail "dpkg -i (with an admin override) failed"
expect_mode "$helper" root:mail 2750
dpkg -r spoollock >/dev/null 2>&1 || fail "dpkg -r failed"
[ "$(dpkg-statoverride --list "$helper")" = "root mail 2750 $helper" ] ||
    fail "dpkg -r dropped the administrator's statoverride"
dpkg --purge spoollock >/dev/null 2>&1 || fail "dpkg --purge failed"
! dpkg-statoverride --list "$helper" >/dev/null 2>&1 || fail "purge kept the administrator's statoverride"
check_gone "the second purge"
say "an administrator's statoverride (2750) is kept by install and remove, dropped by purge"

say "PASS"
