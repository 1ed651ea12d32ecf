#!/usr/bin/env bash
# check-redis-consistency.sh: compare the values cached in Redis with the truth
# in PostgreSQL, through the redis-consistency module, and print a report.
#
# A drop-in replacement for the seed 000 tool of the same name (same flags, same
# cron usage), with the work done inside Redis by CONSISTENCY.CHECK and
# CONSISTENCY.FIX ALL instead of a shell loop over users. See docs/OPERATIONS.md.
#
#   check-redis-consistency.sh [--threshold N] [--user-id ID] [--auto-fix]
#                              [--dry-run] [--summary] [--verbose]
#                              [-h HOST] [-p PORT] [-a PASSWORD] [-n DB]
#                              [--user NAME] [--tls [--cacert FILE] [--cert FILE --key FILE]] ...
#
# Exit status: 0 consistent (or repaired by --auto-fix), 1 drift remains,
# 2 error (bad flags, Redis unreachable, an ERR reply, unreadable output).
#
# Needs redis-cli and python3 (or jq when python3 is missing).
# Hourly cron, as before:
#   0 * * * * /opt/scripts/check-redis-consistency.sh --summary >> /var/log/redis-consistency.log 2>&1

set -uo pipefail

PROG=$(basename "$0")
FIX_TOOL="$(dirname "$0")/fix-user-cache.sh"

HOST=${REDIS_HOST:-127.0.0.1}
PORT=${REDIS_PORT:-6379}
DB=${REDIS_DB:-0}
PASSWORD=""
REDIS_CLI=${REDIS_CLI:-redis-cli}
REDIS_USER=""
TLS=0
CACERT=""
CERT=""
KEY=""
TIMEOUT=120
THRESHOLD=""
USER_ID=""
AUTO_FIX=0
DRY_RUN=0
SUMMARY=0
VERBOSE=0
LIMIT=""
RULES=()

usage() {
    cat <<EOF
Usage: $PROG [options]

Check the Redis cache against PostgreSQL with the redis-consistency module
(CONSISTENCY.CHECK) and report what drifted; optionally repair it
(CONSISTENCY.FIX ALL).

Options:
  --threshold N      report only differences above N (overrides every rule's
                     threshold; default: each rule's own, see CONSISTENCY.RULES)
  --user-id ID       check only this id (user) instead of the whole keyspace
  --auto-fix         repair what drifted (FIX ALL: only verified drift, only
                     keys still holding the value that was checked; with
                     --user-id: clear that id's keys when it drifted)
  --dry-run          with --auto-fix: show what would be repaired, change nothing
  --summary          print only the results summary (for cron logs)
  --verbose          print details: the commands sent, timings, per-rule counts
  --rule NAME        check only this rule (repeatable; default: every rule)
  --limit N          list at most N findings (default: the module's, 100; the
                     counts are always complete; FIX ALL always lists 100)
  -h, --host HOST    Redis host (default \$REDIS_HOST or 127.0.0.1)
  -p, --port PORT    Redis port (default \$REDIS_PORT or 6379)
  -a, --password PW  Redis password; prefer REDISCLI_AUTH in the environment,
                     which keeps it out of 'ps' (either way it reaches redis-cli
                     only through REDISCLI_AUTH, never its command line)
  -n, --db N         Redis database number (default \$REDIS_DB or 0)
  --user NAME        Redis ACL user to log in as (AUTH NAME <password>); needs
                     the password, from -a or REDISCLI_AUTH
  --tls              connect with TLS
  --cacert FILE      with --tls: the CA certificate to verify the server with
  --cert FILE        with --tls: a client certificate, for servers that ask for
                     one (tls-auth-clients)
  --key FILE         with --tls: the client certificate's private key
  --timeout SEC      give up on a command after SEC seconds (default 120)
  --help             show this help

Environment: REDIS_HOST, REDIS_PORT, REDIS_DB, REDISCLI_AUTH as above, and
REDIS_CLI, the redis-cli to run: a path, or a command with arguments split on
blanks (no quoting, nothing evaluated), e.g. to reach Redis in a container:
  REDIS_CLI='docker exec -e REDISCLI_AUTH redis redis-cli'
(-e REDISCLI_AUTH hands the password on into the container).

Exit status: 0 consistent (or repaired), 1 drift remains, 2 error.

Examples:
  $PROG
  $PROG --threshold 10.0
  $PROG --user-id 4
  $PROG --auto-fix
  $PROG --summary >> /var/log/redis-consistency.log 2>&1
EOF
}

# ---------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------

now() { date '+%Y-%m-%d %H:%M:%S'; }
info() { printf '[INFO] %s - %s\n' "$(now)" "$*"; }
success() { printf '[SUCCESS] %s - %s\n' "$(now)" "$*"; }
warning() { printf '[WARNING] %s - %s\n' "$(now)" "$*"; }
debug() {
    if [ "$VERBOSE" = 1 ]; then printf '[DEBUG] %s - %s\n' "$(now)" "$*"; fi
}
error() { printf '[ERROR] %s - %s\n' "$(now)" "$*" >&2; }
fail() {
    error "$*"
    exit 2
}
bad_usage() {
    printf '%s: %s\n' "$PROG" "$*" >&2
    printf "Try '%s --help'.\n" "$PROG" >&2
    exit 2
}
line() { printf '%s\n' '═══════════════════════════════════════════════════════════'; }
thin_line() { printf '%s\n' '───────────────────────────────────────────────────────────'; }

# ---------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------

need_value() {
    [ "$2" -ge 2 ] || bad_usage "$1 needs a value"
}

is_number() { [[ $1 =~ ^[0-9]+([.][0-9]*)?$|^[.][0-9]+$ ]]; }
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

while [ $# -gt 0 ]; do
    case $1 in
        --help) usage; exit 0 ;;
        --threshold) need_value "$1" $#; THRESHOLD=$2; shift 2 ;;
        --threshold=*) THRESHOLD=${1#*=}; shift ;;
        --user-id) need_value "$1" $#; USER_ID=$2; shift 2 ;;
        --user-id=*) USER_ID=${1#*=}; shift ;;
        --auto-fix) AUTO_FIX=1; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        --summary) SUMMARY=1; shift ;;
        --verbose | -v) VERBOSE=1; shift ;;
        --rule) need_value "$1" $#; RULES+=("$2"); shift 2 ;;
        --rule=*) RULES+=("${1#*=}"); shift ;;
        --limit) need_value "$1" $#; LIMIT=$2; shift 2 ;;
        --limit=*) LIMIT=${1#*=}; shift ;;
        -h | --host) need_value "$1" $#; HOST=$2; shift 2 ;;
        --host=*) HOST=${1#*=}; shift ;;
        -p | --port) need_value "$1" $#; PORT=$2; shift 2 ;;
        --port=*) PORT=${1#*=}; shift ;;
        -a | --password) need_value "$1" $#; PASSWORD=$2; shift 2 ;;
        --password=*) PASSWORD=${1#*=}; shift ;;
        -n | --db) need_value "$1" $#; DB=$2; shift 2 ;;
        --db=*) DB=${1#*=}; shift ;;
        --user) need_value "$1" $#; REDIS_USER=$2; shift 2 ;;
        --user=*) REDIS_USER=${1#*=}; shift ;;
        --tls) TLS=1; shift ;;
        --cacert) need_value "$1" $#; CACERT=$2; shift 2 ;;
        --cacert=*) CACERT=${1#*=}; shift ;;
        --cert) need_value "$1" $#; CERT=$2; shift 2 ;;
        --cert=*) CERT=${1#*=}; shift ;;
        --key) need_value "$1" $#; KEY=$2; shift 2 ;;
        --key=*) KEY=${1#*=}; shift ;;
        --timeout) need_value "$1" $#; TIMEOUT=$2; shift 2 ;;
        --timeout=*) TIMEOUT=${1#*=}; shift ;;
        *) bad_usage "unknown option '$1'" ;;
    esac
done

if [ -n "$THRESHOLD" ] && ! is_number "$THRESHOLD"; then
    bad_usage "--threshold must be a non-negative number, got '$THRESHOLD'"
fi
if [ -n "$LIMIT" ] && ! is_uint "$LIMIT"; then
    bad_usage "--limit must be a non-negative integer, got '$LIMIT'"
fi
if ! is_uint "$PORT" || [ "$PORT" -lt 1 ] || [ "$PORT" -gt 65535 ]; then
    bad_usage "--port must be a port number, got '$PORT'"
fi
is_uint "$DB" || bad_usage "--db must be a database number, got '$DB'"
if ! is_uint "$TIMEOUT" || [ "$TIMEOUT" -eq 0 ]; then
    bad_usage "--timeout must be a positive integer, got '$TIMEOUT'"
fi
[ -z "$HOST" ] && bad_usage "--host must not be empty"
if [ -n "$REDIS_USER" ] && [ -z "$PASSWORD" ] && [ -z "${REDISCLI_AUTH:-}" ]; then
    # redis-cli would skip AUTH and go on as the default user.
    bad_usage "--user needs a password (-a or REDISCLI_AUTH)"
fi
if [ "$TLS" = 0 ] && [ -n "$CACERT$CERT$KEY" ]; then
    bad_usage "--cacert, --cert and --key need --tls"
fi
if [ "$DRY_RUN" = 1 ] && [ "$AUTO_FIX" = 0 ]; then
    DRY_RUN_NOTE="--dry-run has no effect without --auto-fix (a check changes nothing)"
else
    DRY_RUN_NOTE=""
fi

# ---------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------

# REDIS_CLI may be a command with arguments (docker exec redis redis-cli):
# split on blanks into words and never evaluated, so quotes, $ and ; in it are
# plain characters.
case $REDIS_CLI in *$'\n'*) fail "REDIS_CLI must be one line" ;; esac
read -r -a CLI <<<"$REDIS_CLI"
[ ${#CLI[@]} -gt 0 ] || CLI=(redis-cli)
command -v "${CLI[0]}" >/dev/null 2>&1 || fail "${CLI[0]} not found (install redis-tools or set REDIS_CLI)"
# What every redis-cli call gets after the command; never the password.
CLI_ARGS=(-h "$HOST" -p "$PORT" -n "$DB")
[ -n "$REDIS_USER" ] && CLI_ARGS+=(--user "$REDIS_USER")
[ "$TLS" = 1 ] && CLI_ARGS+=(--tls)
[ -n "$CACERT" ] && CLI_ARGS+=(--cacert "$CACERT")
[ -n "$CERT" ] && CLI_ARGS+=(--cert "$CERT")
[ -n "$KEY" ] && CLI_ARGS+=(--key "$KEY")
CLI_ARGS+=(-e --raw)

JSON_TOOL=${CONSISTENCY_JSON_TOOL:-}
if [ -z "$JSON_TOOL" ]; then
    if command -v python3 >/dev/null 2>&1; then
        JSON_TOOL=python3
    elif command -v jq >/dev/null 2>&1; then
        JSON_TOOL=jq
    else
        fail "neither python3 nor jq found: one is needed to read the module's JSON"
    fi
fi
case $JSON_TOOL in
    python3 | jq) command -v "$JSON_TOOL" >/dev/null 2>&1 || fail "$JSON_TOOL not found" ;;
    *) fail "CONSISTENCY_JSON_TOOL must be python3 or jq, got '$JSON_TOOL'" ;;
esac

WORK=$(mktemp -d "${TMPDIR:-/tmp}/check-redis-consistency.XXXXXX") || fail "mktemp failed"
trap 'rm -rf "$WORK"' EXIT

# Records, one a line, fields separated by US (0x1f); null is "(nil)":
#   S checked ids drifted rate max_diff max_diff_key truncated rounds duration_ms
#     truth_ms drift invalid orphan missing no_ttl bad_ttl stale   (a check's fields)
#   F dry_run truth changed skipped                      (a fix's fields)
#   R rule checked drifted                               (by_rule)
#   E rule id key status cached truth diff action field  (entries)
PY_FLATTEN='
import json, sys
doc = json.loads(sys.stdin.read(), parse_float=str, parse_int=str)
def t(v):
    if v is None:
        return "(nil)"
    if isinstance(v, bool):
        return "true" if v else "false"
    s = v if isinstance(v, str) else str(v)
    return "".join("?" if ord(c) < 32 or ord(c) == 127 else c for c in s)
def out(*fields):
    sys.stdout.write("\x1f".join(t(f) for f in fields) + "\n")
if "checked" in doc:
    b = doc.get("by_status") or {}
    out("S", doc["checked"], doc["ids"], doc["drifted"], doc["rate"], doc["max_diff"],
        doc["max_diff_key"], doc["truncated"], doc["rounds"], doc["duration_ms"],
        doc["truth_ms"], b.get("drift", 0), b.get("invalid", 0), b.get("orphan", 0),
        b.get("missing", 0), b.get("no_ttl", 0), b.get("bad_ttl", 0), b.get("stale", 0))
if "changed" in doc:
    out("F", doc["dry_run"], doc.get("truth", ""), doc["changed"], doc["skipped"])
for name, r in (doc.get("by_rule") or {}).items():
    out("R", name, r.get("checked"), r.get("drifted"))
for e in doc.get("entries") or []:
    out("E", e.get("rule"), e.get("id"), e.get("key"), e.get("status", ""),
        e.get("cached"), e.get("truth"), e.get("diff"), e.get("action", ""), e.get("field"))
'
JQ_FLATTEN='
def t: if . == null then "(nil)"
       elif type == "string" then explode | map(if . < 32 or . == 127 then 63 else . end) | implode
       else tostring end;
def out: map(t) | join("\u001f");
(if has("checked") then
   ["S", .checked, .ids, .drifted, .rate, .max_diff, .max_diff_key, .truncated, .rounds,
    .duration_ms, .truth_ms, (.by_status.drift // 0), (.by_status.invalid // 0),
    (.by_status.orphan // 0), (.by_status.missing // 0), (.by_status.no_ttl // 0),
    (.by_status.bad_ttl // 0), (.by_status.stale // 0)] | out
 else empty end),
(if has("changed") then ["F", .dry_run, (.truth // ""), .changed, .skipped] | out else empty end),
((.by_rule // {}) | to_entries[] | ["R", .key, .value.checked, .value.drifted] | out),
((.entries // [])[] | ["E", .rule, .id, .key, (.status // ""), .cached, .truth, .diff, (.action // ""), .field] | out)
'

# flatten FILE.json > FILE.rec
flatten() {
    if [ "$JSON_TOOL" = python3 ]; then
        python3 -c "$PY_FLATTEN" <"$1"
    else
        jq -r "$JQ_FLATTEN" <"$1"
    fi
}

# rcli ARGS...: redis-cli against the chosen server (as --user, over --tls when
# asked); the password travels in REDISCLI_AUTH only.
rcli() {
    local -a cmd=("${CLI[@]}" "${CLI_ARGS[@]}")
    if command -v timeout >/dev/null 2>&1; then
        cmd=(timeout "$TIMEOUT" "${cmd[@]}")
    fi
    if [ -n "$PASSWORD" ]; then
        REDISCLI_AUTH=$PASSWORD "${cmd[@]}" "$@"
    else
        "${cmd[@]}" "$@"
    fi
}

# call_json NAME ARGS...: run a module command with FORMAT json; its JSON goes to
# $WORK/NAME.json and its records to $WORK/NAME.rec. Any failure exits 2.
call_json() {
    local name=$1 rc out err
    shift
    debug "${CLI[*]} ${CLI_ARGS[*]} $*"
    out="$WORK/$name.json"
    err="$WORK/$name.err"
    rcli "$@" >"$out" 2>"$err"
    rc=$?
    if [ $rc -ne 0 ] || [ "$(head -c 1 "$out")" != "{" ]; then
        local why
        why=$(cat "$err" "$out" 2>/dev/null | grep -v '^$' | head -n 3 | tr '\n' ' ')
        [ $rc -eq 124 ] && why="no answer within ${TIMEOUT}s"
        fail "$1 failed: ${why:-redis-cli exited with status $rc}"
    fi
    flatten "$out" >"$WORK/$name.rec" || fail "cannot read the reply of $1 as JSON: $(head -c 200 "$out")"
}

# ---------------------------------------------------------------------------
# Reading the records
# ---------------------------------------------------------------------------

US=$'\x1f'
# field NAME.rec TYPE INDEX: one field of the first record of TYPE.
field() {
    awk -F "$US" -v t="$2" -v i="$3" '$1 == t { print $(i + 1); exit }' "$WORK/$1.rec"
}

# A diff or value for display: a number is shown as given; null as "-".
show() {
    if [ "$1" = "(nil)" ]; then printf '%s' "${2:--}"; else printf '%s' "$1"; fi
}

# print_entries NAME: one block per finding.
print_entries() {
    local rec=$1 kind rule id key status cached truth diff action field
    while IFS="$US" read -r kind rule id key status cached truth diff action field; do
        [ "$kind" = E ] || continue
        warning "id $id cache inconsistent! rule $rule, $status: $key"
        [ "$field" != "(nil)" ] && [ -n "$field" ] && printf '  - field:       %s\n' "$field"
        printf '  - database:    %s\n' "$(show "$truth" '(no row)')"
        printf '  - redis cache: %s\n' "$(show "$cached" '(absent)')"
        printf '  - difference:  %s\n' "$(show "$diff")"
        [ -n "$action" ] && printf '  - action:      %s\n' "$action"
    done <"$WORK/$rec.rec"
    return 0
}

# drifted_ids NAME: the distinct ids of the listed findings, in order.
drifted_ids() {
    awk -F "$US" '$1 == "E" && !seen[$3]++ { print $3 }' "$WORK/$1.rec"
}

print_by_rule() {
    local kind rule checked drifted
    while IFS="$US" read -r kind rule checked drifted _; do
        [ "$kind" = R ] || continue
        printf '[DEBUG]   rule %-24s checked %-8s drifted %s\n' "$rule" "$checked" "$drifted"
    done <"$WORK/$1.rec"
    return 0
}

# print_summary NAME [FIXNAME]
print_summary() {
    local rec=$1 fixrec=${2:-}
    local checked ids drifted rate max_diff max_key truncated
    checked=$(field "$rec" S 1)
    ids=$(field "$rec" S 2)
    drifted=$(field "$rec" S 3)
    rate=$(field "$rec" S 4)
    max_diff=$(field "$rec" S 5)
    max_key=$(field "$rec" S 6)
    truncated=$(field "$rec" S 7)
    local by_status
    by_status=$(awk -F "$US" '$1 == "S" { printf "drift %s, invalid %s, orphan %s, missing %s, no_ttl %s, bad_ttl %s, stale %s", $12, $13, $14, $15, $16, $17, $18; exit }' "$WORK/$rec.rec")
    local n_ids
    n_ids=$(drifted_ids "$rec" | wc -l | tr -d ' ')

    echo
    line
    printf '                   Results summary\n'
    line
    printf 'Checked at: %s\n' "$(now)"
    printf 'Scope: %s\n' "$SCOPE"
    printf 'Keys checked: %s\n' "$checked"
    printf 'Ids checked: %s\n' "$ids"
    printf 'Inconsistent entries: %s (%s)\n' "$drifted" "$by_status"
    if [ "${truncated:-0}" != 0 ]; then
        printf 'Inconsistent ids: at least %s (%s entries not listed, raise --limit)\n' "$n_ids" "$truncated"
    else
        printf 'Inconsistent ids: %s\n' "$n_ids"
    fi
    printf 'Inconsistency rate: %s%%\n' "$(awk -v r="$rate" 'BEGIN { printf "%.2f", r * 100 }')"
    if [ "$max_diff" != "(nil)" ] && [ -n "$max_diff" ]; then
        printf 'Max difference: %s (key %s)\n' "$max_diff" "$max_key"
    fi
    if [ -n "$fixrec" ]; then
        local fdry fchanged fskipped
        fdry=$(field "$fixrec" F 1)
        fchanged=$(field "$fixrec" F 3)
        fskipped=$(field "$fixrec" F 4)
        if [ "$fdry" = true ]; then
            printf 'Auto-fix: dry run, nothing changed\n'
        else
            local why
            why=$(awk -F "$US" '$1 == "E" && $9 != "deleted" && $9 != "rewritten" { n[$9]++ }
                END { sep = ""; for (a in n) { printf "%s%s %d", sep, a, n[a]; sep = ", " } }' "$WORK/$fixrec.rec")
            printf 'Auto-fix: %s keys repaired, %s left alone%s\n' "$fchanged" "$fskipped" "${why:+ ($why)}"
        fi
    fi
    if [ "$drifted" != 0 ] && { [ "$AUTO_FIX" = 0 ] || [ "$DRY_RUN" = 1 ]; }; then
        echo
        echo "Suggested fix:"
        local id n=0
        while IFS= read -r id; do
            n=$((n + 1))
            if [ $n -gt 10 ]; then
                echo "  ... and more"
                break
            fi
            printf '  %s %s\n' "$FIX_TOOL" "$id"
        done < <(drifted_ids "$rec")
        echo
        echo "or enable auto-fix:"
        printf '  %s --auto-fix%s\n' "$0" "${THRESHOLD:+ --threshold $THRESHOLD}"
    fi
    line
}

# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

# Redis must answer before anything else.
if ! ping_out=$(rcli PING 2>&1) || [ "$ping_out" != PONG ]; then
    fail "cannot reach Redis at $HOST:$PORT (db $DB): $(printf '%s' "$ping_out" | head -n 2 | tr '\n' ' ')"
fi

if [ -n "$USER_ID" ]; then
    SCOPE="id $USER_ID"
else
    SCOPE="all ids"
fi
[ ${#RULES[@]} -gt 0 ] && SCOPE="$SCOPE, rules ${RULES[*]}"

if [ "$SUMMARY" = 0 ]; then
    line
    printf '  Redis cache consistency check - %s\n' "$(now)"
    thin_line
    printf '  Threshold: %s\n' "${THRESHOLD:-per rule (CONSISTENCY.RULES)}"
    printf '  Scope: %s\n' "$SCOPE"
    if [ "$AUTO_FIX" = 1 ]; then
        printf '  Auto-fix: enabled%s\n' "$([ "$DRY_RUN" = 1 ] && printf ' (dry run)')"
    else
        printf '  Auto-fix: disabled\n'
    fi
    printf '  Redis: %s:%s db %s\n' "$HOST" "$PORT" "$DB"
    line
    echo
    [ -n "$DRY_RUN_NOTE" ] && warning "$DRY_RUN_NOTE"
fi

# Common options.
scope_args=()
for r in ${RULES[@]+"${RULES[@]}"}; do scope_args+=(RULE "$r"); done
check_args=("${scope_args[@]+"${scope_args[@]}"}")
[ -n "$USER_ID" ] && check_args+=(ID "$USER_ID")
[ -n "$THRESHOLD" ] && check_args+=(THRESHOLD "$THRESHOLD")
[ -n "$LIMIT" ] && check_args+=(LIMIT "$LIMIT")

report=check
fixrec=""
if [ "$AUTO_FIX" = 1 ] && [ -z "$USER_ID" ]; then
    # FIX ALL: check, verify, then repair only what still holds the checked value.
    fix_args=(CONSISTENCY.FIX ALL "${scope_args[@]+"${scope_args[@]}"}")
    [ -n "$THRESHOLD" ] && fix_args+=(THRESHOLD "$THRESHOLD")
    [ "$DRY_RUN" = 1 ] && fix_args+=(DRYRUN)
    [ "$SUMMARY" = 0 ] && info "checking and repairing ($SCOPE)..."
    call_json fixall "${fix_args[@]}" FORMAT json
    report=fixall
    fixrec=fixall
else
    [ "$SUMMARY" = 0 ] && info "checking $SCOPE..."
    call_json check CONSISTENCY.CHECK "${check_args[@]+"${check_args[@]}"}" FORMAT json
fi

drifted=$(field "$report" S 3)
if [ "$SUMMARY" = 0 ]; then
    info "compared $(field "$report" S 1) keys of $(field "$report" S 2) ids in $(field "$report" S 9) ms"
    if [ "$VERBOSE" = 1 ]; then
        debug "verification rounds: $(field "$report" S 8), time waiting on PostgreSQL: $(field "$report" S 10) ms"
        print_by_rule "$report"
    fi
    echo
    print_entries "$report"
fi

# One id with --auto-fix: clear that id's keys when it drifted (what the seed's
# auto-fix did through fix-user-cache.sh).
if [ "$AUTO_FIX" = 1 ] && [ -n "$USER_ID" ] && [ "$drifted" != 0 ]; then
    fix_args=(CONSISTENCY.FIX ID "$USER_ID" "${scope_args[@]+"${scope_args[@]}"}")
    [ "$DRY_RUN" = 1 ] && fix_args+=(DRYRUN)
    [ "$SUMMARY" = 0 ] && info "clearing the keys of id $USER_ID..."
    call_json fixid "${fix_args[@]}" FORMAT json
    fixrec=fixid
    if [ "$SUMMARY" = 0 ]; then
        while IFS="$US" read -r kind rule id key _ cached _ _ action; do
            [ "$kind" = E ] || continue
            info "  $action: $key (rule $rule, cache $(show "$cached" '(absent)'))"
        done <"$WORK/fixid.rec"
        ftruth=$(field fixid F 2)
        [ "$ftruth" != ok ] && warning "database truth $ftruth (keys were cleared anyway)"
    fi
fi

print_summary "$report" "$fixrec"

status=0
if [ "$drifted" != 0 ]; then
    status=1
    if [ "$AUTO_FIX" = 1 ] && [ "$DRY_RUN" = 0 ]; then
        # Whatever was repaired, confirm with a fresh check of the same scope.
        call_json recheck CONSISTENCY.CHECK "${check_args[@]+"${check_args[@]}"}" FORMAT json
        left=$(field recheck S 3)
        if [ "$left" = 0 ]; then
            success "repaired: a new check finds no inconsistency"
            status=0
        else
            warning "$left inconsistent entries remain after the repair"
            [ "$SUMMARY" = 0 ] && print_entries recheck
        fi
    fi
else
    [ "$SUMMARY" = 0 ] && success "all checked caches are consistent"
fi
exit $status
