#!/bin/sh
# Install (or upgrade) evsite on a gateway.
#
#   sudo systemd/install.sh                       from a checkout: build the wheel, install
#   sudo systemd/install.sh --wheel evsite.whl    a wheel built elsewhere (CI)
#   sudo systemd/install.sh --wheelhouse DIR      offline: dependencies from DIR, not PyPI
#   systemd/install.sh --prefix /tmp/x --no-systemd   a test install as any user
#
# Layout (PREFIX is empty for a real install):
#   PREFIX/opt/evsite/releases/VERSION/venv   one venv per release: requirements.lock + the wheel
#   PREFIX/opt/evsite/current -> releases/VERSION   switched atomically (rename of a symlink)
#   PREFIX/etc/evsite/site.toml               the site config, created from an example only if absent
#   PREFIX/etc/evsite/examples/               the shipped example configs (refreshed)
#   PREFIX/var/lib/evsite                     state: store, control socket, logs
#   PREFIX/etc/systemd/system/evsite.service  the unit (paths rewritten under PREFIX)
#
# Safe to run twice: a release already installed from the same code and lock file is
# kept as is; a half-built one (interrupted run) is rebuilt. A different build under the
# same version is refused unless --force (bump the version instead).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
prefix=""
use_systemd=1
wheel=""
wheelhouse=""
skip_deps=0
force=0
keep=3
py=${PYTHON:-python3}

die() { echo "install.sh: $*" >&2; exit 1; }
say() { echo "install.sh: $*"; }

usage() {
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    cat <<EOF
Options:
  --prefix DIR      install under DIR instead of / (tests, image builds)
  --no-systemd      no evsite user, no ownership changes, no systemctl (tests, containers)
  --wheel FILE      install this evsite wheel instead of building one from the checkout
  --wheelhouse DIR  take dependencies from DIR only (pip --no-index --find-links DIR)
  --skip-deps       install evsite without its dependencies (layout tests only: it will not run)
  --python PY       interpreter for the venv (default: python3; needs >= 3.11)
  --keep N          releases to keep (default 3; the current one is always kept)
  --force           rebuild an installed release whose code differs (same version)
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; prefix=$2; shift 2 ;;
        --prefix=*) prefix=${1#--prefix=}; shift ;;
        --no-systemd) use_systemd=0; shift ;;
        --wheel) [ $# -ge 2 ] || die "--wheel needs a file"; wheel=$2; shift 2 ;;
        --wheelhouse) [ $# -ge 2 ] || die "--wheelhouse needs a directory"; wheelhouse=$2; shift 2 ;;
        --skip-deps) skip_deps=1; shift ;;
        --python) [ $# -ge 2 ] || die "--python needs an interpreter"; py=$2; shift 2 ;;
        --keep) [ $# -ge 2 ] || die "--keep needs a number"; keep=$2; shift 2 ;;
        --force) force=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done

case "$keep" in ''|*[!0-9]*|0) die "--keep must be a number >= 1, got '$keep'" ;; esac
if [ -n "$prefix" ]; then
    mkdir -p "$prefix" || die "cannot create prefix $prefix"
    prefix=$(cd "$prefix" && pwd)
    [ "$prefix" = / ] && prefix=""
fi
if [ "$use_systemd" = 1 ] && [ "$(id -u)" != 0 ]; then
    die "run as root (sudo), or pass --prefix DIR --no-systemd for a test install"
fi
command -v "$py" >/dev/null 2>&1 || die "no $py found; install Python 3.11 or newer (Debian: apt install python3 python3-venv)"
"$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
    || die "$py is $("$py" -V 2>&1); evsite needs Python >= 3.11"
"$py" -c 'import venv, ensurepip' 2>/dev/null \
    || die "$py has no venv/ensurepip module (Debian: apt install python3-venv)"
[ -f "$repo/requirements.lock" ] || die "no requirements.lock in $repo: run from an evsite checkout or release tarball"
[ -z "$wheelhouse" ] || [ -d "$wheelhouse" ] || die "--wheelhouse $wheelhouse is not a directory"

opt="$prefix/opt/evsite"
etc="$prefix/etc/evsite"
state="$prefix/var/lib/evsite"
unitdir="$prefix/etc/systemd/system"

work=$(mktemp -d "${TMPDIR:-/tmp}/evsite-install.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

# --- the wheel ---------------------------------------------------------------------------
if [ -z "$wheel" ]; then
    say "building the evsite wheel from $repo"
    # build from a copy: pip would leave build/ and *.egg-info in the checkout
    mkdir "$work/src"
    (cd "$repo" && tar --exclude=__pycache__ -cf - pyproject.toml README.md agent drivers hil) | tar -C "$work/src" -xf -
    isolation="--no-build-isolation"
    "$py" -c 'import setuptools' 2>/dev/null || isolation=""   # then pip fetches setuptools
    # shellcheck disable=SC2086
    "$py" -m pip wheel --quiet --disable-pip-version-check --no-deps $isolation -w "$work/dist" "$work/src" \
        || die "building the wheel failed (see pip's output above)"
    wheel=$(ls "$work"/dist/evsite-*.whl)
fi
[ -f "$wheel" ] || die "wheel $wheel not found"
case "$wheel" in *.whl) ;; *) die "$wheel is not a wheel (.whl)" ;; esac
version=$(basename "$wheel" | sed -n 's/^evsite-\([^-]*\)-.*\.whl$/\1/p')
[ -n "$version" ] || die "cannot read the version from the wheel name $(basename "$wheel")"

# What identifies a build: the wheel's RECORD (every file's hash; unlike the zip itself it
# does not change with build timestamps) and the lock file.
stamp=$("$py" - "$wheel" "$repo/requirements.lock" "$skip_deps" <<'EOF'
import hashlib, sys, zipfile
wheel, lock, skip = sys.argv[1:4]
h = hashlib.sha256()
with zipfile.ZipFile(wheel) as z:
    record = next(n for n in z.namelist() if n.endswith(".dist-info/RECORD"))
    for line in sorted(z.read(record).decode().splitlines()):
        if "/RECORD," not in line:
            h.update(line.encode() + b"\n")
h.update(open(lock, "rb").read())
h.update(b"skip-deps" if skip == "1" else b"")
print(h.hexdigest())
EOF
)

# --- the release -------------------------------------------------------------------------
rel="$opt/releases/$version"
mkdir -p "$opt/releases"
if [ -f "$rel/.evsite-release" ] && [ "$(cat "$rel/.evsite-release")" = "$stamp" ]; then
    say "release $version already installed, unchanged"
else
    if [ -f "$rel/.evsite-release" ]; then
        [ "$force" = 1 ] || die "release $version is installed from different code; bump the version, or pass --force to rebuild it (stop the service first)"
        say "rebuilding release $version (--force)"
    fi
    # no stamp = never finished (or forced): start from nothing. The venv is built in its
    # final place because venvs are not relocatable (their scripts name their python).
    rm -rf "$rel"
    say "creating release $version in $rel"
    "$py" -m venv "$rel/venv"
    pipi() { "$rel/venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-warn-script-location "$@"; }
    if [ -n "$wheelhouse" ]; then
        pipi() { "$rel/venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-warn-script-location --no-index --find-links "$wheelhouse" "$@"; }
    fi
    if [ "$skip_deps" = 0 ]; then
        pipi --require-hashes -r "$repo/requirements.lock" || die "installing dependencies from requirements.lock failed"
    fi
    pipi --no-deps "$wheel" || die "installing $(basename "$wheel") failed"
    cp "$repo/requirements.lock" "$rel/requirements.lock"
    [ -f "$repo/README.md" ] && cp "$repo/README.md" "$rel/README.md"
    cp "$here/README.md" "$rel/README-systemd.md"
    echo "$stamp" > "$rel/.evsite-release"   # last: marks the release complete
fi

# switch `current` atomically: a new symlink renamed over the old one
ln -sfn "releases/$version" "$opt/current.new"
mv -T "$opt/current.new" "$opt/current"
say "current release: $version"

# prune old releases: keep the newest KEEP (by version), always including the current one
ls -1 "$opt/releases" | grep -vxF "$version" | sort -V | head -n "-$((keep - 1))" | while read -r old; do
    say "removing old release $old"
    rm -rf "${opt:?}/releases/$old"
done

# --- config and state --------------------------------------------------------------------
mkdir -p "$etc/examples"
for f in "$repo"/config/*.toml; do
    [ -f "$f" ] && cp "$f" "$etc/examples/"
done
if [ ! -e "$etc/site.toml" ]; then
    cp "$repo/config/single-wallbox.toml" "$etc/site.toml"
    chmod 0640 "$etc/site.toml"
    say "created $etc/site.toml from the single-wallbox example: edit it, then run"
    say "    $opt/current/venv/bin/evsite check-config $etc/site.toml"
else
    say "keeping existing $etc/site.toml"
fi
mkdir -p "$state"
chmod 0750 "$state"

# --- the unit ----------------------------------------------------------------------------
mkdir -p "$unitdir"
sed -e "s#/opt/evsite#$opt#g" -e "s#/etc/evsite#$etc#g" -e "s#/var/lib/evsite#$state#g" \
    "$here/evsite.service" > "$unitdir/evsite.service.new"
chmod 0644 "$unitdir/evsite.service.new"
mv -f "$unitdir/evsite.service.new" "$unitdir/evsite.service"
# remote software updates (docs/maintenance.md): the boot guard and a writable release tree
mkdir -p "$unitdir/evsite.service.d"
sed -e "s#/opt/evsite#$opt#g" "$here/updates.conf" > "$unitdir/evsite.service.d/updates.conf.new"
chmod 0644 "$unitdir/evsite.service.d/updates.conf.new"
mv -f "$unitdir/evsite.service.d/updates.conf.new" "$unitdir/evsite.service.d/updates.conf"

if [ "$use_systemd" = 0 ]; then
    say "installed under ${prefix:-/} (no user, no systemctl: --no-systemd)"
    exit 0
fi

# --- user, ownership, service (real installs only) ---------------------------------------
if ! id evsite >/dev/null 2>&1; then
    say "creating system user evsite"
    useradd --system --home-dir /var/lib/evsite --no-create-home --shell /usr/sbin/nologin \
        --user-group evsite || die "useradd evsite failed"
fi
for g in dialout gpio; do
    getent group "$g" >/dev/null 2>&1 || { say "group $g does not exist here; creating it"; groupadd --system "$g"; }
done
chown root:evsite "$etc" "$etc/site.toml"
chmod 0750 "$etc"
chown evsite:evsite "$state"
# the agent installs updates as new releases and switches `current` itself
chown -R evsite:evsite "$opt"
systemctl daemon-reload
systemctl enable evsite.service >/dev/null
if systemctl is-active --quiet evsite.service; then
    say "restarting evsite for release $version"
    systemctl restart evsite.service
else
    say "enabled; start it with: systemctl start evsite   (logs: journalctl -u evsite -f)"
fi
