#!/usr/bin/env bash
# Install spoollock from source, without a package manager:
#
#     bash packaging/install.sh                      # build, install under /usr/local
#     PREFIX=/usr bash packaging/install.sh          # ... under /usr
#     DESTDIR=/tmp/stage PREFIX=/usr bash packaging/install.sh   # staged (packagers)
#     bash packaging/install.sh --no-build           # install what `cargo build --release --features spoollock/mangen` made
#     bash packaging/install.sh --uninstall          # remove what it installs
#
# Installs
#     $BINDIR/spoollock                                   (default $PREFIX/bin)
#     $LIBEXECDIR/spoollock/spoollock-helper              (default $PREFIX/libexec)
#     $MANDIR/man1/spoollock*.1, $MANDIR/man8/spoollock-helper.8   (default $PREFIX/share/man)
#     $DOCDIR/{README.md,SECURITY.md,audit.md,helper.conf.example} (default $PREFIX/share/doc/spoollock)
# each under $DESTDIR if set. The helper's path is compiled into both
# programs, so the build uses SPOOLLOCK_HELPER_PATH=$LIBEXECDIR/spoollock/spoollock-helper
# (without DESTDIR); --no-build checks the binaries were built that way.
# The helper's configuration is always /etc/spoollock/helper.conf.
#
# The helper must be owned by root, group mail, mode 2755. Run as root,
# this script sets that; otherwise it prints the two commands to run as
# root. CARGO_TARGET_DIR is honoured.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
build=1
action=install
for arg in "$@"; do
    case "$arg" in
        --no-build) build=0 ;;
        --uninstall) action=uninstall ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "install.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

PREFIX="${PREFIX:-/usr/local}"
DESTDIR="${DESTDIR:-}"
BINDIR="${BINDIR:-$PREFIX/bin}"
LIBEXECDIR="${LIBEXECDIR:-$PREFIX/libexec}"
MANDIR="${MANDIR:-$PREFIX/share/man}"
DOCDIR="${DOCDIR:-$PREFIX/share/doc/spoollock}"
GROUP=mail
for dir in "$PREFIX" "$BINDIR" "$LIBEXECDIR" "$MANDIR" "$DOCDIR"; do
    case "$dir" in
        /*) ;;
        *) echo "install.sh: '$dir' is not an absolute path (PREFIX and the *DIR variables must be)" >&2; exit 2 ;;
    esac
done
helper_path="$LIBEXECDIR/spoollock/spoollock-helper"
helper="$DESTDIR$helper_path"

files=(
    "$DESTDIR$BINDIR/spoollock"
    "$helper"
    "$DESTDIR$MANDIR/man8/spoollock-helper.8"
    "$DESTDIR$DOCDIR/README.md" "$DESTDIR$DOCDIR/SECURITY.md"
    "$DESTDIR$DOCDIR/audit.md" "$DESTDIR$DOCDIR/helper.conf.example"
)

if [ "$action" = uninstall ]; then
    rm -f "${files[@]}" "$DESTDIR$MANDIR"/man1/spoollock.1 "$DESTDIR$MANDIR"/man1/spoollock-*.1
    rmdir "$DESTDIR$LIBEXECDIR/spoollock" "$DESTDIR$DOCDIR" 2>/dev/null || true
    echo "install.sh: removed spoollock from $DESTDIR$PREFIX"
    exit 0
fi

cd "$repo"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
case "$target_dir" in /*) ;; *) target_dir="$repo/$target_dir" ;; esac
bin="$target_dir/release"
if [ "$build" = 1 ]; then
    echo "install.sh: cargo build --release (helper path $helper_path)"
    SPOOLLOCK_HELPER_PATH="$helper_path" "${CARGO:-cargo}" build --release \
        -p spoollock -p spoollock-helper --bins --features spoollock/mangen
fi
for b in spoollock spoollock-helper spoollock-mangen; do
    [ -x "$bin/$b" ] || { echo "install.sh: $bin/$b not built (run without --no-build)" >&2; exit 1; }
done
# The client must look for the helper where it is being installed.
if ! grep -qaF "$helper_path" "$bin/spoollock"; then
    echo "install.sh: $bin/spoollock was not built for $helper_path;" \
        "rebuild: SPOOLLOCK_HELPER_PATH=$helper_path cargo build --release --features spoollock/mangen" >&2
    exit 1
fi

umask 022
install -d "$DESTDIR$BINDIR" "$DESTDIR$LIBEXECDIR/spoollock" "$DESTDIR$MANDIR/man1" \
    "$DESTDIR$MANDIR/man8" "$DESTDIR$DOCDIR"
install -m 0755 "$bin/spoollock" "$DESTDIR$BINDIR/spoollock"
install -m 0755 "$bin/spoollock-helper" "$helper"
man1="$(mktemp -d)"
trap 'rm -rf "$man1"' EXIT
"$bin/spoollock-mangen" "$man1" >/dev/null
install -m 0644 "$man1"/*.1 "$DESTDIR$MANDIR/man1/"
sed "s|/usr/libexec/spoollock/|$LIBEXECDIR/spoollock/|g" packaging/man/spoollock-helper.8 \
    >"$DESTDIR$MANDIR/man8/spoollock-helper.8"
chmod 0644 "$DESTDIR$MANDIR/man8/spoollock-helper.8"
install -m 0644 README.md SECURITY.md docs/audit.md packaging/helper.conf.example "$DESTDIR$DOCDIR/"
echo "install.sh: installed spoollock in $DESTDIR$PREFIX"

if [ "$(id -u)" -eq 0 ]; then
    getent group "$GROUP" >/dev/null || {
        echo "install.sh: group $GROUP does not exist; create it (groupadd --system $GROUP) and re-run" >&2
        exit 1
    }
    chown "root:$GROUP" "$helper"
    chmod 2755 "$helper"
    echo "install.sh: $helper is root:$GROUP 2755"
else
    echo "install.sh: not root, so $helper is not setgid $GROUP yet. Run as root:"
    echo "    chown root:$GROUP $helper"
    echo "    chmod 2755 $helper"
fi
