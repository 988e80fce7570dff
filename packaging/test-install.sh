#!/usr/bin/env bash
# Test packaging/install.sh, as root (CI):
#
#   1. as root, PREFIX=/usr/local DESTDIR=<stage>: the binaries are built for
#      /usr/local/libexec/spoollock/spoollock-helper (the path compiled into
#      the client and written in the man pages), everything lands under the
#      stage, and the helper is root:mail 2755;
#   2. as an unprivileged user, --no-build into a stage of theirs: the same
#      files, the helper left the user's and not setgid, and the two
#      commands to run as root printed;
#   3. --no-build with another PREFIX refuses binaries built for this one;
#   4. --uninstall removes every file.
#
# Exit status: 0 passed, 1 failed, 77 skipped (the reason is printed).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
user="${SPOOLLOCK_PKGTEST_USER:-slpkgtest}"

say() { echo "test-install.sh: $*"; }
fail() { echo "test-install.sh: FAIL: $*" >&2; exit 1; }
# shellcheck source=packaging/test-lib.sh
. "$here/test-lib.sh"
skip() { echo "test-install.sh: SKIP: $*"; exit 77; }

[ "$(id -u)" -eq 0 ] || skip "needs root (chown root:mail, a second user)"
for tool in useradd setpriv getent; do
    command -v "$tool" >/dev/null || skip "missing $tool (apt-get install passwd util-linux)"
done
getent group mail >/dev/null || fail "group mail does not exist"
ensure_user "$user"

work="$(mktemp -d /tmp/spoollock-installtest.XXXXXX)"
chmod 0755 "$work"
trap 'rm -rf "$work"' EXIT
prefix=/usr/local
helper_path="$prefix/libexec/spoollock/spoollock-helper"

expect_mode() { # path owner:group mode
    local got
    got="$(stat -c '%U:%G %a' "$1")"
    [ "$got" = "$2 $3" ] || fail "$1 is $got, expected $2 $3"
}

check_tree() { # stage helper-owner:group helper-mode
    local stage="$1"
    for f in bin/spoollock share/man/man1/spoollock.1 share/man/man1/spoollock-run.1 \
        share/man/man8/spoollock-helper.8 share/doc/spoollock/SECURITY.md \
        share/doc/spoollock/audit.md share/doc/spoollock/README.md \
        share/doc/spoollock/helper.conf.example; do
        [ -f "$stage$prefix/$f" ] || fail "$stage$prefix/$f is not installed"
    done
    expect_mode "$stage$helper_path" "$2" "$3"
    grep -qaF "$helper_path" "$stage$prefix/bin/spoollock" ||
        fail "the installed spoollock does not look for $helper_path"
    grep -qF "${helper_path//-/\\-}" "$stage$prefix/share/man/man1/spoollock.1" ||
        fail "spoollock(1) does not name $helper_path"
    grep -qF "/usr/local/libexec/spoollock/spoollock\\-helper" "$stage$prefix/share/man/man8/spoollock-helper.8" ||
        fail "spoollock-helper(8) does not name $helper_path"
    [ -z "$(find "$stage" -path "$stage$prefix" -prune -o -print | grep -v "^$stage$" | grep -vx "$stage/usr" || true)" ] ||
        fail "files outside $stage$prefix"
}

# ---- 1. as root -----------------------------------------------------------
say "as root: PREFIX=$prefix DESTDIR=$work/root-stage"
PREFIX="$prefix" DESTDIR="$work/root-stage" bash "$repo/packaging/install.sh" >"$work/root.txt" 2>&1 ||
    { cat "$work/root.txt"; fail "install.sh as root failed"; }
check_tree "$work/root-stage" root:mail 2755
say "installed under the stage; helper root:mail 2755; binaries and pages name $helper_path"

# ---- 2. as a user -----------------------------------------------------------
# The user gets a world-readable copy of what install.sh reads, wherever the
# repository is checked out.
src="$work/src"
mkdir -p "$src/packaging/man" "$src/docs" "$src/target/release"
cp "$repo/packaging/install.sh" "$src/packaging/"
cp "$repo/packaging/helper.conf.example" "$src/packaging/"
cp "$repo/packaging/man/spoollock-helper.8" "$src/packaging/man/"
cp "$repo/README.md" "$repo/SECURITY.md" "$src/"
cp "$repo/docs/audit.md" "$src/docs/"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
cp "$target_dir/release/spoollock" "$target_dir/release/spoollock-helper" \
    "$target_dir/release/spoollock-mangen" "$src/target/release/"
chmod -R a+rX "$src"
install -d -o "$user" "$work/user-stage"
say "as $user: --no-build, DESTDIR=$work/user-stage"
setpriv --reuid="$user" --regid="$user" --init-groups --reset-env -- \
    env PREFIX="$prefix" DESTDIR="$work/user-stage" CARGO_TARGET_DIR="$src/target" \
    bash "$src/packaging/install.sh" --no-build >"$work/user.txt" 2>&1 ||
    { cat "$work/user.txt"; fail "install.sh as $user failed"; }
sed 's/^/  /' "$work/user.txt"
check_tree "$work/user-stage" "$user:$(id -gn "$user")" 755
staged="$work/user-stage$helper_path"
grep -qx "    chown root:mail $staged" "$work/user.txt" || fail "no chown command printed"
grep -qx "    chmod 2755 $staged" "$work/user.txt" || fail "no chmod command printed"
say "not root: helper left $user's and 0755, the two commands printed"

# ---- 3. binaries built for another prefix -------------------------------------
if PREFIX=/opt/other DESTDIR="$work/other-stage" CARGO_TARGET_DIR="$src/target" \
    bash "$src/packaging/install.sh" --no-build >"$work/other.txt" 2>&1; then
    fail "install.sh --no-build accepted binaries built for $prefix as /opt/other"
fi
grep -q "was not built for /opt/other/libexec/spoollock/spoollock-helper" "$work/other.txt" ||
    { cat "$work/other.txt"; fail "no clear error for binaries built for another prefix"; }
say "--no-build refuses binaries built for another helper path"

# ---- 4. uninstall -------------------------------------------------------------
PREFIX="$prefix" DESTDIR="$work/root-stage" bash "$repo/packaging/install.sh" --uninstall >/dev/null
left="$(find "$work/root-stage" -type f)"
[ -z "$left" ] || fail "left after --uninstall: $left"
say "--uninstall removed every file"

say "PASS"
