#!/usr/bin/env bash
# Build the spoollock Debian package with dpkg-deb: one command, from the
# repository's root or anywhere:
#
#     bash packaging/debian/build-deb.sh            # -> target/debian/spoollock_<version>_<arch>.deb
#     bash packaging/debian/build-deb.sh -o DIR     # put the .deb in DIR
#
# It builds the release binaries with cargo (CARGO_TARGET_DIR is honoured),
# renders spoollock(1) from the clap definition (spoollock-mangen), strips
# the binaries, computes Depends with dpkg-shlibdeps, and assembles
#
#   /usr/bin/spoollock
#   /usr/libexec/spoollock/spoollock-helper    root:root 0755 in the archive;
#                                              postinst makes it root:mail 2755
#                                              with dpkg-statoverride, postrm undoes it
#   /usr/lib/<triplet>/spoollock/liblockfile.so.1   spoollock's liblockfile, used only
#                                              after an opt-in (README.Debian)
#   /usr/share/spoollock/00-spoollock-liblockfile.conf   the opt-in's ld.so.conf.d file
#   /usr/share/man/man1/spoollock*.1.gz, /usr/share/man/man8/spoollock-helper.8.gz,
#   /usr/share/man/man3/spoollock-liblockfile.3.gz
#   /usr/share/doc/spoollock/{copyright,changelog.Debian.gz,SECURITY.md,README.md,audit.md,README.Debian}
#   /usr/share/doc/spoollock/examples/helper.conf
#   /usr/share/lintian/overrides/spoollock
#
# The package version comes from packaging/debian/changelog, whose upstream
# part must equal the workspace version in Cargo.toml. Needs: cargo, dpkg-dev
# (dpkg-shlibdeps), binutils (strip), gzip. Runs as any user: file ownership
# in the archive is root:root (dpkg-deb --root-owner-group).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out=""
while [ $# -gt 0 ]; do
    case "$1" in
        -o|--out) out="$2"; shift 2 ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "build-deb.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done

die() { echo "build-deb.sh: $*" >&2; exit 1; }
cargo="${CARGO:-cargo}"
command -v "$cargo" >/dev/null || die "$cargo not found (install Rust with rustup)"
for tool in dpkg-deb dpkg-shlibdeps strip gzip; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install dpkg-dev binutils gzip)"
done

cd "$repo"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
case "$target_dir" in /*) ;; *) target_dir="$repo/$target_dir" ;; esac
out="${out:-$target_dir/debian}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

# Version: the changelog's, checked against Cargo's.
deb_version="$(sed -n '1s/^spoollock (\([^)]*\)).*/\1/p' "$here/changelog")"
[ -n "$deb_version" ] || die "cannot read the version from $here/changelog"
upstream="${deb_version%-*}"
cargo_version="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)"
[ "$upstream" = "$cargo_version" ] ||
    die "packaging/debian/changelog says $deb_version but Cargo.toml says $cargo_version: add a changelog entry"
# Reproducible: every timestamp is the changelog's.
changelog_date="$(sed -n 's/^ -- .*>  \(.*\)$/\1/p' "$here/changelog" | head -n1)"
SOURCE_DATE_EPOCH="$(date -d "$changelog_date" +%s)"
export SOURCE_DATE_EPOCH
arch="$(dpkg --print-architecture)"
homepage="$(sed -n '/^\[workspace.package\]/,/^\[/s/^repository *= *"\(.*\)"/\1/p' Cargo.toml)"

grep -q "^\.TH SPOOLLOCK\\\\-HELPER 8 .* \"spoollock $upstream\"" packaging/man/spoollock-helper.8 ||
    die "packaging/man/spoollock-helper.8: its .TH line does not say \"spoollock $upstream\""
for doc in SECURITY.md README.md docs/audit.md; do
    [ -f "$repo/$doc" ] || die "$doc is missing"
done

echo "build-deb.sh: cargo build --release (spoollock, spoollock-helper, spoollock-mangen)"
"$cargo" build --release -p spoollock -p spoollock-helper --bins --features spoollock/mangen
echo "build-deb.sh: cargo build --release (spoollock-capi: liblockfile.so.1)"
"$cargo" build --release -p spoollock-capi --lib
bin="$target_dir/release"
triplet="$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)"
[ -n "$triplet" ] || die "cannot tell the multiarch triplet (dpkg-architecture)"
libdir="/usr/lib/$triplet/spoollock"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
root="$work/root"
umask 022

install -d "$root/DEBIAN" "$root/usr/bin" "$root/usr/libexec/spoollock" \
    "$root/usr/share/man/man1" "$root/usr/share/man/man3" "$root/usr/share/man/man8" \
    "$root/usr/share/doc/spoollock/examples" "$root$libdir" "$root/usr/share/spoollock"

# Binaries, stripped as dh_strip does.
install -m 0755 "$bin/spoollock" "$root/usr/bin/spoollock"
install -m 0755 "$bin/spoollock-helper" "$root/usr/libexec/spoollock/spoollock-helper"
for f in "$root/usr/bin/spoollock" "$root/usr/libexec/spoollock/spoollock-helper"; do
    strip --remove-section=.comment --remove-section=.note --strip-unneeded "$f"
done
# spoollock's liblockfile.so.1, in a directory of its own: no program finds
# it until the administrator opts in (README.Debian).
install -m 0644 "$bin/liblockfile.so" "$root$libdir/liblockfile.so.1"
strip --remove-section=.comment --remove-section=.note --strip-unneeded "$root$libdir/liblockfile.so.1"
sed "s|@LIBDIR@|$libdir|" "$here/00-spoollock-liblockfile.conf.in" \
    >"$root/usr/share/spoollock/00-spoollock-liblockfile.conf"
chmod 0644 "$root/usr/share/spoollock/00-spoollock-liblockfile.conf"

# Manual pages: spoollock(1) from the clap definition, spoollock-helper(8)
# hand-written.
"$bin/spoollock-mangen" "$work/man1" >/dev/null
for page in "$work"/man1/*.1; do
    install -m 0644 "$page" "$root/usr/share/man/man1/"
done
install -m 0644 "$repo/packaging/man/spoollock-helper.8" "$root/usr/share/man/man8/"
install -m 0644 "$repo/capi/man/spoollock-liblockfile.3" "$root/usr/share/man/man3/"
gzip -9n "$root"/usr/share/man/man1/*.1 "$root"/usr/share/man/man3/*.3 "$root"/usr/share/man/man8/*.8

# Documentation.
doc="$root/usr/share/doc/spoollock"
install -m 0644 "$repo/SECURITY.md" "$repo/README.md" "$repo/docs/audit.md" "$doc/"
install -m 0644 "$repo/packaging/helper.conf.example" "$doc/examples/helper.conf"
install -m 0644 "$here/changelog" "$doc/changelog.Debian"
sed "s|@TRIPLET@|$triplet|g" "$here/README.Debian" >"$doc/README.Debian"
chmod 0644 "$doc/README.Debian"
gzip -9n "$doc/changelog.Debian"
crates="$("$cargo" tree -p spoollock -p spoollock-helper -p spoollock-capi -e normal,no-proc-macro --prefix none \
        -f '{p} ({l})' 2>/dev/null |
    sed 's/ (\*)$//; s/ ([/][^)]*)//' | sort -u |
    grep -v -e '^spoollock' -e '^$' -e '^clap_mangen ' -e '^roff ' | sed 's/^/  /')"
[ -n "$crates" ] || die "cargo tree listed no crates"
{
    sed "s|@HOMEPAGE@|$homepage|" "$here/copyright.in"
} >"$doc/copyright"
# The statically linked crates, in the header's Comment field.
CRATES="$crates" awk '
    /^Comment:$/ { print; in_comment = 1; next }
    in_comment && !/^ / {
        print " ."
        print " Statically linked crates, with their licenses (SPDX):"
        n = split(ENVIRON["CRATES"], line, "\n")
        for (i = 1; i <= n; i++) print " " substr(line[i], 3)
        in_comment = 0
    }
    { print }
' "$doc/copyright" >"$work/copyright" && install -m 0644 "$work/copyright" "$doc/copyright"
if [ -f "$here/lintian-overrides" ]; then
    install -d "$root/usr/share/lintian/overrides"
    install -m 0644 "$here/lintian-overrides" "$root/usr/share/lintian/overrides/spoollock"
fi

# Control files.
install -m 0755 "$here/postinst" "$here/postrm" "$root/DEBIAN/"
mkdir -p "$work/shlibdeps/debian"
printf 'Source: spoollock\n\nPackage: spoollock\nArchitecture: any\n' >"$work/shlibdeps/debian/control"
depends="$(cd "$work/shlibdeps" && dpkg-shlibdeps -O \
    "$root/usr/bin/spoollock" "$root/usr/libexec/spoollock/spoollock-helper" \
    "$root$libdir/liblockfile.so.1" 2>/dev/null |
    sed -n 's/^shlibs:Depends=//p')"
[ -n "$depends" ] || die "dpkg-shlibdeps found no dependencies"
size="$(du -sk --apparent-size --exclude=DEBIAN "$root" | cut -f1)"
sed -e "s|@VERSION@|$deb_version|" -e "s|@ARCH@|$arch|" -e "s|@SIZE@|$size|" \
    -e "s|@DEPENDS@|$depends|" -e "s|@HOMEPAGE@|$homepage|" \
    "$here/control.in" >"$root/DEBIAN/control"
chmod 0644 "$root/DEBIAN/control"
(cd "$root" && find usr -type f -print0 | LC_ALL=C sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums"

# Every timestamp at SOURCE_DATE_EPOCH (dpkg-deb clamps too).
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

deb="$out/spoollock_${deb_version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
