# Shared by the tools that fetch Debian's packages (sourced, not run): `have CMD`,
# whether a command exists; `as_root`, whether this shell can install packages (root,
# with apt-get and dpkg); `apt_install PACKAGE...`, install them quietly, updating the
# package lists once if the first try fails (a fresh machine may have none).
have() { command -v "$1" >/dev/null; }
as_root() { [ "$(id -u)" = 0 ] && have apt-get && have dpkg; }
apt_install() {
    as_root || return 1
    apt-get install -y -qq "$@" >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "$@" >/dev/null 2>&1; }
}
