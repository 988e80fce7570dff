#!/usr/bin/env bash
# Build the spoollock RPM from this work tree:
#
#     bash packaging/rpm/build-rpm.sh        # -> target/rpm/RPMS/<arch>/spoollock-<version>-1.<arch>.rpm
#
# Makes Source0 from the files git tracks (as they are in the work tree),
# then runs `rpmbuild -bb` with its _topdir in target/rpm (CARGO_TARGET_DIR
# is not used: %build builds in rpmbuild's own tree). On a system without an
# RPM database of build dependencies (Debian, with `apt-get install rpm`),
# pass --nodeps: rpmbuild cannot see cargo installed by rustup.
set -euo pipefail
# The spec builds in rpmbuild's own tree and installs from target/release.
unset CARGO_TARGET_DIR
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"
for tool in rpmbuild rpmspec git tar; do
    command -v "$tool" >/dev/null || { echo "build-rpm.sh: $tool not found (apt-get install rpm)" >&2; exit 1; }
done
spec="$here/spoollock.spec"
version="$(rpmspec -q --qf '%{VERSION}\n' "$spec" | head -n1)"
cargo_version="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)"
[ "$version" = "$cargo_version" ] || {
    echo "build-rpm.sh: spoollock.spec says $version but Cargo.toml says $cargo_version" >&2
    exit 1
}
top="${RPM_TOPDIR:-$repo/target/rpm}"
mkdir -p "$top/SOURCES"
git ls-files -z | tar --null -T - --transform "s|^|spoollock-$version/|" \
    --owner=0 --group=0 --numeric-owner -czf "$top/SOURCES/spoollock-$version.tar.gz"
rpmbuild -bb --define "_topdir $top" "$@" "$spec"
find "$top/RPMS" -name "spoollock-$version-*.rpm" -print
