# Shell functions shared by packaging/test-package.sh and
# packaging/test-install.sh (sourced; they define `fail` first).

# ensure_user NAME: create the user unless it exists. Another test may
# create it at the same moment, so a failed useradd is retried.
ensure_user() {
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        id -u "$1" >/dev/null 2>&1 && return 0
        useradd --no-create-home --shell /bin/sh --comment "spoollock package test" "$1" 2>/dev/null && return 0
        sleep 0.5
    done
    id -u "$1" >/dev/null 2>&1 || fail "cannot create user $1"
}
