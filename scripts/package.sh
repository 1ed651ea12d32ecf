#!/usr/bin/env bash
# package.sh: builds the Debian package of the module,
# redis-consistency_<version>-<revision>_<arch>.deb, with dpkg-deb from a staging
# directory laid out here (no debhelper, no cargo-deb: nothing beyond dpkg-dev and
# binutils, which it installs when run as root on Debian).
#
#   scripts/package.sh [--module FILE] [--out DIR]
#
#   --module FILE  package this built module instead of running
#                  `cargo build --release` (the tests hand it the one they load)
#   --out DIR      where the .deb goes (default target/debian)
#
# Environment: DEB_MAINTAINER ("Name <email>"; default "$DEBFULLNAME <$DEBEMAIL>",
# then the repository's git user), DEB_REVISION (default 1), SOURCE_DATE_EPOCH
# (file dates and the changelog date; default the last commit's time).
#
# The package installs the module in /usr/lib/redis/modules/, a conffile
# /etc/redis/redis-consistency.conf (redis.conf.example with the installed path)
# that /etc/redis/redis.conf includes to load it, and the example rules, licenses
# and copyright under /usr/share/doc/redis-consistency/. It prints the path of the
# .deb on stdout.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
LOG_TAG=package.sh

PKG=redis-consistency
MODULE_DIR=/usr/lib/redis/modules
MODULE_NAME=libredis_consistency.so
CONF=/etc/redis/redis-consistency.conf
DOC=/usr/share/doc/$PKG

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }

MODULE=""
OUT="$ROOT/target/debian"
while [ $# -gt 0 ]; do
    case $1 in
        --module) [ $# -ge 2 ] || die "--module needs a file"; MODULE=$2; shift 2 ;;
        --out) [ $# -ge 2 ] || die "--out needs a directory"; OUT=$2; shift 2 ;;
        --help) usage; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done

ensure_package_tools

# ---------------------------------------------------------------------------
# What goes in the control file: each value is checked to be one line of the
# expected shape, since a newline would add a field of its own.
# ---------------------------------------------------------------------------

VERSION=$(awk '/^\[/ { section = $0 } section == "[package]" && $1 == "version" { gsub(/"/, "", $3); print $3; exit }' "$ROOT/Cargo.toml")
[[ $VERSION =~ ^[0-9]+\.[0-9]+\.[0-9]+([.~+][A-Za-z0-9.~+]*)?$ ]] || die "cannot read the version from Cargo.toml (got '$VERSION')"
REVISION=${DEB_REVISION:-1}
[[ $REVISION =~ ^[0-9][A-Za-z0-9.~+]*$ ]] || die "DEB_REVISION must be a Debian revision (e.g. 1), got '$REVISION'"
ARCH=$(dpkg --print-architecture)

MAINTAINER=${DEB_MAINTAINER:-}
if [ -z "$MAINTAINER" ] && [ -n "${DEBFULLNAME:-}" ] && [ -n "${DEBEMAIL:-}" ]; then
    MAINTAINER="$DEBFULLNAME <$DEBEMAIL>"
fi
if [ -z "$MAINTAINER" ]; then
    name=$(git -C "$ROOT" config user.name 2>/dev/null || true)
    email=$(git -C "$ROOT" config user.email 2>/dev/null || true)
    [ -n "$name" ] && [ -n "$email" ] && MAINTAINER="$name <$email>"
fi
[ -n "$MAINTAINER" ] || die "who maintains the package? set DEB_MAINTAINER='Name <email>'"
[[ $MAINTAINER =~ ^[^\<\>[:cntrl:]]+\ \<[^\<\>[:space:][:cntrl:]]+@[^\<\>[:space:][:cntrl:]]+\>$ ]] ||
    die "DEB_MAINTAINER must read 'Name <email>' on one line, got '$MAINTAINER'"

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || date +%s)
fi
[[ $SOURCE_DATE_EPOCH =~ ^[0-9]+$ ]] || die "SOURCE_DATE_EPOCH must be seconds since the epoch, got '$SOURCE_DATE_EPOCH'"
export SOURCE_DATE_EPOCH

# ---------------------------------------------------------------------------
# The module
# ---------------------------------------------------------------------------

if [ -z "$MODULE" ]; then
    ensure_cargo
    # No features: the test hooks never reach a package.
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release --locked -p redis-consistency >&2)
    MODULE="$ROOT/target/release/$MODULE_NAME"
fi
[ -f "$MODULE" ] || die "module not found: $MODULE"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/rc-package.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# dpkg-shlibdeps wants a source tree: debian/control, and the files under
# debian/<package>/.
STAGE="$WORK/debian/$PKG"
mkdir -p "$WORK/debian"
printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$PKG" "$PKG" >"$WORK/debian/control"

install -d -m 0755 "$STAGE$MODULE_DIR" "$STAGE/etc/redis" "$STAGE$DOC/examples" "$STAGE/DEBIAN"
# Stripped, as Debian ships libraries; the dynamic symbols Redis looks up
# (RedisModule_OnLoad) stay. 0755, not a library's usual 0644: Redis 7 refuses
# to load a module file without execute permission.
strip --strip-unneeded -o "$STAGE$MODULE_DIR/$MODULE_NAME" "$MODULE"
chmod 0755 "$STAGE$MODULE_DIR/$MODULE_NAME"

# ---------------------------------------------------------------------------
# The conf snippet: redis.conf.example with the installed module path, under a
# header saying how to turn it on. Debian's redis.conf has no conf.d: the
# operator adds one include line.
# ---------------------------------------------------------------------------

example="$ROOT/redis.conf.example"
grep -q '^loadmodule /path/to/libredis_consistency\.so$' "$example" ||
    die "redis.conf.example has no 'loadmodule /path/to/libredis_consistency.so' line to point at $MODULE_DIR"
{
    cat <<EOF
# $CONF: loads the redis-consistency module (package $PKG) and
# documents its options. Nothing reads it until redis.conf includes it; to turn
# the module on, add to /etc/redis/redis.conf:
#
#   include $CONF
#
# then put your rules in /etc/redis/consistency-rules.json (an example is in
# $DOC/examples/rules.example.json, and rules.seed004.example.json for JSON
# caches), set consistency.pg-url and
# consistency.rules-file below, and restart: systemctl restart redis-server
#
EOF
    sed "s|/path/to/libredis_consistency\\.so|$MODULE_DIR/$MODULE_NAME|g" "$example"
} >"$STAGE$CONF"
chmod 0644 "$STAGE$CONF"

install -m 0644 "$ROOT/rules.example.json" "$STAGE$DOC/examples/rules.example.json"
install -m 0644 "$ROOT/rules.seed004.example.json" "$STAGE$DOC/examples/rules.seed004.example.json"
install -m 0644 "$ROOT/LICENSE-APACHE" "$ROOT/LICENSE-MIT" "$STAGE$DOC/"
gzip -9n <"$ROOT/README.md" >"$STAGE$DOC/README.md.gz"
for doc in REFERENCE OPERATIONS; do
    gzip -9n <"$ROOT/docs/$doc.md" >"$STAGE$DOC/$doc.md.gz"
    chmod 0644 "$STAGE$DOC/$doc.md.gz"
done
chmod 0644 "$STAGE$DOC/README.md.gz"

# ---------------------------------------------------------------------------
# changelog.Debian and copyright
# ---------------------------------------------------------------------------

commit=$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
{
    printf '%s (%s-%s) unstable; urgency=medium\n\n' "$PKG" "$VERSION" "$REVISION"
    printf '  * Built by scripts/package.sh from commit %s.\n\n' "$commit"
    printf ' -- %s  %s\n' "$MAINTAINER" "$(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$STAGE$DOC/changelog.Debian.gz"
chmod 0644 "$STAGE$DOC/changelog.Debian.gz"

# license_covered EXPR: the crate may be used under MIT or Apache-2.0, whose
# texts this package carries.
license_covered() {
    case " $1 " in *" AND "* | *" WITH "*) return 1 ;; esac
    local alt alts
    read -r -a alts <<<"$(printf '%s' "$1" | sed 's#/# OR #g; s/[()]//g; s/ OR / /g')"
    for alt in "${alts[@]}"; do
        case $alt in MIT | Apache-2.0) return 0 ;; esac
    done
    return 1
}

# The Rust crates linked into the module (not build scripts or proc-macros).
crates="$WORK/crates"
(cd "$ROOT" && cargo tree --offline --locked -e normal,no-proc-macro --prefix none \
    -p redis-consistency --format '{p} {l}') |
    sed 's/ (\*)$//' | grep -v ' (/' | sort -u >"$crates" ||
    die "cargo tree failed: cannot list the crates linked into the module"
[ -s "$crates" ] || die "cargo tree listed no crates"

# crate_license_texts NAME VERSION: the license files a crate ships, in DEP-5
# continuation form, leaving out its MIT and Apache texts (this file has both).
crate_license_texts() {
    local file found=0 base
    for file in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"$1-$2"/*; do
        [ -f "$file" ] || continue
        base=${file##*/}
        case ${base^^} in
            *APACHE* | *MIT*) continue ;;
            LICENSE* | LICENCE* | COPYING* | COPYRIGHT* | NOTICE*) ;;
            *) continue ;;
        esac
        printf ' .\n %s of %s %s:\n .\n' "$base" "$1" "$2"
        sed 's/^[[:space:]]*$/./; s/^/ /' "$file"
        found=1
    done
    [ $found = 1 ] || printf ' .\n %s %s ships no license file.\n' "$1" "$2"
}

TAB=$'\t'
{
    cat <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: redis-consistency
Upstream-Contact: $MAINTAINER

Files: *
Copyright: 2026 The redis-consistency authors
License: Apache-2.0 or MIT
Comment: The module links these Rust crates statically, each under the
 license it declares; those offering neither MIT nor Apache-2.0 have the
 texts they ship in the License paragraphs at the end.
EOF
    while read -r name version license; do
        printf ' %s %s: %s\n' "$name" "${version#v}" "$license"
    done <"$crates"
    cat <<'EOF'

License: Apache-2.0
 On Debian systems the full text of the Apache License, Version 2.0 is in
 /usr/share/common-licenses/Apache-2.0 (and LICENSE-APACHE next to this file).

License: MIT
EOF
    # DEP-5: continuation lines start with a space; an empty line is " .".
    sed 's/^$/./; s/^/ /' "$ROOT/LICENSE-MIT"
    # One paragraph per license expression, with each such crate's texts.
    while read -r name version license; do
        license_covered "$license" || printf '%s\t%s\t%s\n' "$license" "$name" "${version#v}"
    done <"$crates" | LC_ALL=C sort -t "$TAB" -k1,1 -k2,2 |
        while IFS=$TAB read -r license name version; do
            if [ "$license" != "${previous:-}" ]; then
                printf '\nLicense: %s\n Crates under this license, with the texts they ship:\n' "$license"
                previous=$license
            fi
            crate_license_texts "$name" "$version"
        done
} >"$STAGE$DOC/copyright"
chmod 0644 "$STAGE$DOC/copyright"

# ---------------------------------------------------------------------------
# Control files
# ---------------------------------------------------------------------------

# What the module links dynamically (libc6, libgcc-s1), as dpkg-shlibdeps sees it.
shlibs=$(cd "$WORK" && dpkg-shlibdeps -O -e"$STAGE$MODULE_DIR/$MODULE_NAME" 2>"$WORK/shlibdeps.err") ||
    { cat "$WORK/shlibdeps.err" >&2; die "dpkg-shlibdeps failed"; }
shlibs=${shlibs#shlibs:Depends=}
[[ $shlibs =~ ^[a-z0-9.+-]+(\ \([^\)]*\))?(,\ [a-z0-9.+-]+(\ \([^\)]*\))?)*$ ]] ||
    die "unexpected dpkg-shlibdeps output: '$shlibs'"

printf '%s\n' "$CONF" >"$STAGE/DEBIAN/conffiles"
installed_kb=$(du -k -s --apparent-size --exclude=DEBIAN "$STAGE" | cut -f1)
# Debian's redis-server carries epoch 5 (5:7.0.15-1); without the epoch any
# version of it would satisfy ">= 7.0", since every epoch beats none.
cat >"$STAGE/DEBIAN/control" <<EOF
Package: $PKG
Version: $VERSION-$REVISION
Architecture: $ARCH
Maintainer: $MAINTAINER
Installed-Size: $installed_kb
Depends: redis-server (>= 5:7.0), $shlibs
Section: database
Priority: optional
Description: Redis module checking cached values against PostgreSQL
 redis-consistency finds and repairs drift between values an application
 caches in Redis and the truth in PostgreSQL. A rules file names each family
 of cache keys and the SQL that gives their true value; CONSISTENCY.CHECK
 compares every key with the truth without blocking Redis, CONSISTENCY.FIX
 clears or rewrites stale keys, and a timer inside Redis replaces cron jobs.
 .
 The module is not loaded until /etc/redis/redis.conf includes
 $CONF.
EOF
(cd "$STAGE" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z |
    xargs -0 md5sum) >"$STAGE/DEBIAN/md5sums"
chmod 0644 "$STAGE/DEBIAN/control" "$STAGE/DEBIAN/conffiles" "$STAGE/DEBIAN/md5sums"
find "$STAGE" -type d -exec chmod 0755 {} +
find "$STAGE" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

mkdir -p "$OUT"
deb="$OUT/${PKG}_$VERSION-${REVISION}_$ARCH.deb"
dpkg-deb --root-owner-group -Zxz --build "$STAGE" "$deb" >&2
log "built $deb"
printf '%s\n' "$deb"
