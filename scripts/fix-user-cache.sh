#!/usr/bin/env bash
# fix-user-cache.sh: clear one user's (id's) cached values so the application
# reloads them from PostgreSQL, through the redis-consistency module.
#
# A drop-in replacement for the seed 000 tool of the same name: the same
# positional id and flags, with the work done inside Redis by
#   CONSISTENCY.FIX ID <id> [DRYRUN] FORMAT json
# which clears every rule's key for the id (the rules file names them; no key
# names are hard-coded here) and shows each key's cached and true value.
# See docs/OPERATIONS.md.
#
#   fix-user-cache.sh <id> [<id>...] [--dry-run] [--verbose]
#                     [-h HOST] [-p PORT] [-a PASSWORD] [-n DB]
#                     [--user NAME] [--tls [--cacert FILE] [--cert FILE --key FILE]] ...
#
# Exit status: 0 cleared (or previewed with --dry-run), 1 some key could not be
# cleared (changed meanwhile, or not on this node), 2 error (bad flags, Redis
# unreachable, an ERR reply, unreadable output, an id with no key cached and no
# row in the database).
#
# Needs redis-cli and python3 (or jq when python3 is missing).

set -uo pipefail

PROG=$(basename "$0")

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
DRY_RUN=0
VERBOSE=0
REWRITE=0
IDS=()
RULES=()

usage() {
    cat <<EOF
Usage: $PROG <id> [<id>...] [options]

Clear the Redis cache of an id (a user) with the redis-consistency module
(CONSISTENCY.FIX): every rule's key for the id is deleted, so the application
reloads it from the database. Shows each key's cached and database value.

Options:
  --dry-run          show what would be cleared, change nothing
  --verbose          print details: the command sent, the database status
  --rule NAME        clear only this rule's key (repeatable; default: every
                     rule whose fix is not 'none')
  --rewrite          set the keys to the database value instead of deleting
                     them (needs PostgreSQL; number and hash_field rules only)
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
  --timeout SEC      give up after SEC seconds (default 120)
  --help             show this help

Environment: REDIS_HOST, REDIS_PORT, REDIS_DB, REDISCLI_AUTH as above, and
REDIS_CLI, the redis-cli to run: a path, or a command with arguments split on
blanks (no quoting, nothing evaluated), e.g. to reach Redis in a container:
  REDIS_CLI='docker exec -e REDISCLI_AUTH redis redis-cli'
(-e REDISCLI_AUTH hands the password on into the container).

Exit status: 0 cleared (or previewed), 1 a key could not be cleared, 2 error
(among them an id with no key cached and no row in the database: a typo?).

Examples:
  $PROG 4 --dry-run
  $PROG 4
  $PROG 4 --verbose
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

# ---------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------

need_value() {
    [ "$2" -ge 2 ] || bad_usage "$1 needs a value"
}
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

while [ $# -gt 0 ]; do
    case $1 in
        --help) usage; exit 0 ;;
        --dry-run) DRY_RUN=1; shift ;;
        --verbose | -v) VERBOSE=1; shift ;;
        --rewrite) REWRITE=1; shift ;;
        --rule) need_value "$1" $#; RULES+=("$2"); shift 2 ;;
        --rule=*) RULES+=("${1#*=}"); shift ;;
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
        --) shift; IDS+=("$@"); break ;;
        -*) bad_usage "unknown option '$1'" ;;
        *) IDS+=("$1"); shift ;;
    esac
done

[ ${#IDS[@]} -gt 0 ] || bad_usage "which id? usage: $PROG <id> [--dry-run] [--verbose]"
for id in "${IDS[@]}"; do
    [ -n "$id" ] || bad_usage "an id must not be empty"
done
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

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fix-user-cache.XXXXXX") || fail "mktemp failed"
trap 'rm -rf "$WORK"' EXIT

# Records, one a line, fields separated by US (0x1f); null is "(nil)":
#   F dry_run truth changed skipped
#   E rule id key cached truth diff action
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
out("F", doc["dry_run"], doc["truth"], doc["changed"], doc["skipped"])
for e in doc.get("entries") or []:
    out("E", e.get("rule"), e.get("id"), e.get("key"), e.get("cached"), e.get("truth"),
        e.get("diff"), e.get("action"))
'
JQ_FLATTEN='
def t: if . == null then "(nil)"
       elif type == "string" then explode | map(if . < 32 or . == 127 then 63 else . end) | implode
       else tostring end;
def out: map(t) | join("\u001f");
(["F", .dry_run, .truth, .changed, .skipped] | out),
((.entries // [])[] | ["E", .rule, .id, .key, .cached, .truth, .diff, .action] | out)
'

flatten() {
    if [ "$JSON_TOOL" = python3 ]; then
        python3 -c "$PY_FLATTEN" <"$1"
    else
        jq -r "$JQ_FLATTEN" <"$1"
    fi
}

# missing_ids FILE: the ids of a CHECK reply's "missing" entries (the truth has
# them, the key is absent), one a line, control characters as "?" like flatten.
PY_MISSING='
import json, sys
doc = json.loads(sys.stdin.read())
for e in doc.get("entries") or []:
    if e.get("status") == "missing":
        print("".join("?" if ord(c) < 32 or ord(c) == 127 else c for c in str(e.get("id"))))
'
JQ_MISSING='
(.entries // [])[] | select(.status == "missing") | .id | tostring
  | explode | map(if . < 32 or . == 127 then 63 else . end) | implode
'
missing_ids() {
    if [ "$JSON_TOOL" = python3 ]; then
        python3 -c "$PY_MISSING" <"$1"
    else
        jq -r "$JQ_MISSING" <"$1"
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

US=$'\x1f'
field() {
    awk -F "$US" -v t="$2" -v i="$3" '$1 == t { print $(i + 1); exit }' "$1"
}
show() {
    if [ "$1" = "(nil)" ]; then printf '%s' "${2:--}"; else printf '%s' "$1"; fi
}

# print_table FILE: the entries as aligned columns.
print_table() {
    local -a rows=() widths=(0 0 0 0 0 0)
    local kind rule id key cached truth diff action row i cell
    rows+=("rule${US}key${US}cache${US}database${US}diff${US}action")
    while IFS="$US" read -r kind rule id key cached truth diff action; do
        [ "$kind" = E ] || continue
        rows+=("$rule${US}$key${US}$(show "$cached" '(absent)')${US}$(show "$truth" '(no value)')${US}$(show "$diff")${US}$action")
    done <"$1"
    for row in "${rows[@]}"; do
        IFS="$US" read -r -a cells <<<"$row"
        for i in 0 1 2 3 4 5; do
            cell=${cells[$i]:-}
            [ ${#cell} -gt "${widths[$i]}" ] && widths[i]=${#cell}
        done
    done
    local n=0
    for row in "${rows[@]}"; do
        IFS="$US" read -r -a cells <<<"$row"
        printf '  '
        for i in 0 1 2 3 4; do
            printf '%-*s  ' "${widths[$i]}" "${cells[$i]:-}"
        done
        printf '%s\n' "${cells[5]:-}"
        if [ $n -eq 0 ]; then
            printf '  '
            for i in 0 1 2 3 4 5; do
                printf '%s' "$(printf '%*s' "${widths[$i]}" '' | tr ' ' '-')"
                [ $i -lt 5 ] && printf '  '
            done
            printf '\n'
        fi
        n=$((n + 1))
    done
}

# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

line
printf '  Redis cache fix - id: %s%s\n' "${IDS[*]}" "$([ "$DRY_RUN" = 1 ] && printf ' (dry run)')"
line
echo

info "step 1/3: checking the Redis connection ($HOST:$PORT, db $DB)..."
if ! ping_out=$(rcli PING 2>&1) || [ "$ping_out" != PONG ]; then
    fail "cannot reach Redis at $HOST:$PORT (db $DB): $(printf '%s' "$ping_out" | head -n 2 | tr '\n' ' ')"
fi
success "Redis answers"
echo

fix_args=(CONSISTENCY.FIX)
for id in "${IDS[@]}"; do fix_args+=(ID "$id"); done
for r in ${RULES[@]+"${RULES[@]}"}; do fix_args+=(RULE "$r"); done
[ "$DRY_RUN" = 1 ] && fix_args+=(DRYRUN)
[ "$REWRITE" = 1 ] && fix_args+=(REWRITE)
fix_args+=(FORMAT json)

if [ "$DRY_RUN" = 1 ]; then
    info "step 2/3: looking up what would be cleared (dry run, nothing changes)..."
else
    info "step 2/3: clearing the Redis cache..."
fi
debug "${CLI[*]} ${CLI_ARGS[*]} ${fix_args[*]}"
out="$WORK/fix.json"
rcli "${fix_args[@]}" >"$out" 2>"$WORK/fix.err"
rc=$?
if [ $rc -ne 0 ] || [ "$(head -c 1 "$out")" != "{" ]; then
    why=$(cat "$WORK/fix.err" "$out" 2>/dev/null | grep -v '^$' | head -n 3 | tr '\n' ' ')
    [ $rc -eq 124 ] && why="no answer within ${TIMEOUT}s"
    fail "CONSISTENCY.FIX failed: ${why:-redis-cli exited with status $rc}"
fi
rec="$WORK/fix.rec"
flatten "$out" >"$rec" || fail "cannot read the reply of CONSISTENCY.FIX as JSON: $(head -c 200 "$out")"

truth=$(field "$rec" F 2)
changed=$(field "$rec" F 3)
skipped=$(field "$rec" F 4)
present=$(awk -F "$US" '$1 == "E" && $8 != "absent" { n++ } END { print n + 0 }' "$rec")
absent=$(awk -F "$US" '$1 == "E" && $8 == "absent" { n++ } END { print n + 0 }' "$rec")
left=$(awk -F "$US" '$1 == "E" && $8 ~ /^skipped_/ { n++ } END { print n + 0 }' "$rec")
debug "database truth: $truth"

echo
print_table "$rec"
echo

if [ "$truth" != ok ]; then
    warning "database $truth: keys are cleared anyway, the application reloads them"
fi
if [ "$DRY_RUN" = 1 ]; then
    info "dry run: $present keys would be cleared, $absent not cached; nothing was changed"
elif [ "$left" -gt 0 ]; then
    warning "cleared $changed keys; $left could not be cleared (changed meanwhile or not on this node)"
else
    success "cache cleared ($changed keys deleted or rewritten, $absent not cached)"
fi
if [ "$VERBOSE" = 1 ]; then
    debug "changed $changed, skipped $skipped (absent ones included)"
fi

echo
info "step 3/3: database values"
while IFS="$US" read -r kind rule id key _ truth_value _ _; do
    [ "$kind" = E ] || continue
    # No value: no row, a NULL, or a presence rule (whose truth has none).
    printf '  id %s  %-20s %s\n' "$id" "$rule" "$(show "$truth_value" '(no value)')"
done <"$rec"
echo

# Ids nobody knows: FIX lists every selected rule's key of an id, so an id with
# no key cached (and none on another node) and no truth value anywhere is
# probably mistyped. A presence rule's truth has no value, so an id it knows
# looks the same in FIX's reply: CHECK tells, as it reports that id's absent
# key as missing (presence rules report missing keys unless set to ignore). A
# truth row whose value is NULL also looks like no row. Only with the truth at
# hand: without it nothing can be said.
unknown=()
if [ "$truth" = ok ]; then
    mapfile -t candidates < <(awk -F "$US" '
        $1 == "E" {
            if (!($3 in known)) { known[$3] = 0; order[++n] = $3 }
            if ($5 != "(nil)" || $6 != "(nil)" || $8 == "skipped_not_local") known[$3] = 1
        }
        END { for (i = 1; i <= n; i++) if (!known[order[i]]) print order[i] }' "$rec")
    if [ ${#candidates[@]} -gt 0 ]; then
        check_args=(CONSISTENCY.CHECK)
        for id in "${candidates[@]}"; do check_args+=(ID "$id"); done
        for r in ${RULES[@]+"${RULES[@]}"}; do check_args+=(RULE "$r"); done
        # Entries of every candidate and rule, not the default first 100.
        check_args+=(LIMIT 1000000 FORMAT json)
        debug "${CLI[*]} ${CLI_ARGS[*]} ${check_args[*]}"
        rcli "${check_args[@]}" >"$WORK/check.json" 2>"$WORK/check.err"
        rc=$?
        if [ $rc -ne 0 ] || [ "$(head -c 1 "$WORK/check.json")" != "{" ]; then
            why=$(cat "$WORK/check.err" "$WORK/check.json" 2>/dev/null | grep -v '^$' | head -n 3 | tr '\n' ' ')
            fail "CONSISTENCY.CHECK of the ids with nothing cached failed: ${why:-redis-cli exited with status $rc}"
        fi
        missing_ids "$WORK/check.json" >"$WORK/missing" ||
            fail "cannot read the reply of CONSISTENCY.CHECK as JSON: $(head -c 200 "$WORK/check.json")"
        for id in "${candidates[@]}"; do
            grep -qxF -e "$id" "$WORK/missing" || unknown+=("$id")
        done
    fi
fi
for id in ${unknown[@]+"${unknown[@]}"}; do
    warning "id $id: no key cached and no row in the database: is the id right?"
done
if [ ${#unknown[@]} -gt 0 ]; then
    echo "Unknown id: ${unknown[*]}. Nothing was cleared for it."
    exit 2
fi

if [ "$DRY_RUN" = 1 ]; then
    echo "Dry run complete: run without --dry-run to clear."
    exit 0
fi
if [ "$left" -gt 0 ]; then
    echo "Some keys were left alone; check them with check-redis-consistency.sh --user-id ${IDS[0]}"
    exit 1
fi
printf '✅ Fixed: id %s can be served from the database values again.\n' "${IDS[*]}"
exit 0
