#!/usr/bin/env bash
# Runs CONSISTENCY.CHECK (or FIX ALL) on every primary of a Redis Cluster, given
# any one node, and merges the per-shard reports into one report with the CHECK
# fields. Each primary checks only the keys of the slots it owns, so the merged
# report covers the cluster once.
#
# Usage: scripts/cluster-check.sh [-h host] [-p port] [-a password] [--fix]
#                                 [--dry-run] [--threshold N] [--rule NAME]...
#                                 [--limit N] [--json] [--user NAME]
#                                 [--tls [--cacert FILE] [--cert FILE --key FILE]]
# The password may also come from REDISCLI_AUTH (never put it on a command line);
# --user logs in as that ACL user and needs it. REDIS_CLI: the redis-cli to run,
# a path or a command with arguments split on blanks, never evaluated
# (REDIS_CLI='docker exec -e REDISCLI_AUTH redis redis-cli').
# Exit status: 0 consistent (or everything repaired), 1 drift remains, 2 errors.
set -uo pipefail

host=127.0.0.1
port=6379
fix=0
dry_run=0
json=0
limit=100
extra=()
user=""
tls=0
cacert=""
cert=""
key=""

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }
die() { printf 'cluster-check: %s\n' "$*" >&2; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
        -h|--host) host=${2:?--host needs a value}; shift 2 ;;
        -p|--port) port=${2:?--port needs a value}; shift 2 ;;
        -a|--password) export REDISCLI_AUTH=${2:?--password needs a value}; shift 2 ;;
        --fix) fix=1; shift ;;
        --dry-run) dry_run=1; shift ;;
        --threshold) extra+=(THRESHOLD "${2:?--threshold needs a value}"); shift 2 ;;
        --rule) extra+=(RULE "${2:?--rule needs a value}"); shift 2 ;;
        --limit) limit=${2:?--limit needs a value}; shift 2 ;;
        --json) json=1; shift ;;
        --user) user=${2:?--user needs a value}; shift 2 ;;
        --tls) tls=1; shift ;;
        --cacert) cacert=${2:?--cacert needs a file}; shift 2 ;;
        --cert) cert=${2:?--cert needs a file}; shift 2 ;;
        --key) key=${2:?--key needs a file}; shift 2 ;;
        --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option '$1'" ;;
    esac
done
case "$limit" in ''|*[!0-9]*) die "--limit must be a non-negative integer, got '$limit'" ;; esac
# redis-cli would skip AUTH and go on as the default user.
[ -z "$user" ] || [ -n "${REDISCLI_AUTH:-}" ] || die "--user needs a password (-a or REDISCLI_AUTH)"
[ "$tls" = 1 ] || [ -z "$cacert$cert$key" ] || die "--cacert, --cert and --key need --tls"
case ${REDIS_CLI:-} in *$'\n'*) die "REDIS_CLI must be one line" ;; esac
# Split on blanks into words, never evaluated: quotes, $ and ; are plain characters.
read -r -a redis_cli <<<"${REDIS_CLI:-redis-cli}"
[ ${#redis_cli[@]} -gt 0 ] || redis_cli=(redis-cli)
command -v "${redis_cli[0]}" >/dev/null || die "${redis_cli[0]} not found"
command -v python3 >/dev/null || die "python3 not found"
cli_args=(--no-auth-warning)
[ -n "$user" ] && cli_args+=(--user "$user")
[ "$tls" = 1 ] && cli_args+=(--tls)
[ -n "$cacert" ] && cli_args+=(--cacert "$cacert")
[ -n "$cert" ] && cli_args+=(--cert "$cert")
[ -n "$key" ] && cli_args+=(--key "$key")

cli() { "${redis_cli[@]}" "${cli_args[@]}" -h "$1" -p "$2" "${@:3}"; }

nodes=$(cli "$host" "$port" CLUSTER NODES 2>&1) || die "cannot reach $host:$port: $nodes"
case "$nodes" in ERR*|NOAUTH*|WRONGPASS*|*"cluster support disabled"*) die "$host:$port: $nodes" ;; esac

# Primaries that are up: "<id> <ip:port@cport> <flags> ..." with flags holding master.
primaries=$(printf '%s\n' "$nodes" | awk '$3 ~ /master/ && $3 !~ /fail/ { split($2, a, "@"); print a[1] }')
[ -n "$primaries" ] || die "no primaries found through $host:$port"

if [ "$fix" = 1 ]; then
    command=(CONSISTENCY.FIX ALL "${extra[@]}")
    [ "$dry_run" = 1 ] && command+=(DRYRUN)
else
    command=(CONSISTENCY.CHECK "${extra[@]}" LIMIT "$limit")
fi
command+=(FORMAT json)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
n=0
pids=()
for node in $primaries; do
    n=$((n + 1))
    node_host=${node%:*}
    node_port=${node##*:}
    # Shards run at once: the cluster is checked in the time of its slowest shard.
    ( cli "$node_host" "$node_port" "${command[@]}" >"$tmp/$n.json" 2>&1; echo "$node" >"$tmp/$n.node" ) &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done

python3 - "$tmp" "$limit" "$json" "$fix" <<'PY'
import json, os, sys

tmp, limit, as_json, fix = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4] == "1"
reports = []
for name in sorted(os.listdir(tmp)):
    if not name.endswith(".json"):
        continue
    node = open(os.path.join(tmp, name[:-5] + ".node")).read().strip()
    text = open(os.path.join(tmp, name)).read().strip()
    try:
        reports.append((node, json.loads(text)))
    except ValueError:
        print(f"cluster-check: {node}: {text}", file=sys.stderr)
        sys.exit(2)

statuses = ["drift", "invalid", "orphan", "missing", "no_ttl", "bad_ttl", "stale"]
merged = {
    "checked": sum(r["checked"] for _, r in reports),
    # Ids are counted per shard: with hash-tagged templates an id lives on one shard.
    "ids": sum(r["ids"] for _, r in reports),
    "drifted": sum(r["drifted"] for _, r in reports),
}
merged["rate"] = merged["drifted"] / merged["checked"] if merged["checked"] else 0
with_max = [r for _, r in reports if r["max_diff"] is not None]
top = max(with_max, key=lambda r: r["max_diff"], default=None)
merged["max_diff"] = top["max_diff"] if top else None
merged["max_diff_key"] = top["max_diff_key"] if top else None
merged["by_status"] = {s: sum(r["by_status"][s] for _, r in reports) for s in statuses}
by_rule = {}
for _, r in reports:
    for rule, t in r["by_rule"].items():
        acc = by_rule.setdefault(rule, {"checked": 0, "drifted": 0})
        acc["checked"] += t["checked"]
        acc["drifted"] += t["drifted"]
merged["by_rule"] = by_rule
merged["rounds"] = max((r["rounds"] for _, r in reports), default=0)
merged["duration_ms"] = max((r["duration_ms"] for _, r in reports), default=0)
merged["truth_ms"] = max((r["truth_ms"] for _, r in reports), default=0)
entries = [e for _, r in reports for e in r["entries"]]
# As one node sorts them: largest |diff| first, then the rest by rule and key.
entries.sort(key=lambda e: (e["diff"] is None, -abs(e["diff"] or 0), e["rule"], e["key"], statuses.index(e["status"]),
                            e.get("field") is not None, e.get("field") or ""))
shown = entries[:limit]
merged["truncated"] = merged["drifted"] - len(shown)
merged["entries"] = shown
# A CHANGED check is "changed" only if every shard's was.
modes = [r.get("mode", "full") for _, r in reports]
merged["mode"] = "changed" if modes and all(m == "changed" for m in modes) else "full"
merged["reason"] = next((r.get("reason") for _, r in reports if r.get("reason")), None)
if fix:
    merged["dry_run"] = any(r.get("dry_run") for _, r in reports)
    merged["changed"] = sum(r.get("changed", 0) for _, r in reports)
    merged["skipped"] = sum(r.get("skipped", 0) for _, r in reports)
merged["shards"] = [{"node": node, "checked": r["checked"], "drifted": r["drifted"]} for node, r in reports]

if as_json:
    print(json.dumps(merged))
else:
    print(f"cluster: {len(reports)} primaries, {merged['checked']} keys, {merged['ids']} ids checked, "
          f"{merged['drifted']} findings ({merged['rate'] * 100:.2f}%)")
    for s in statuses:
        if merged["by_status"][s]:
            print(f"  {s}: {merged['by_status'][s]}")
    for e in shown:
        diff = "" if e["diff"] is None else f" diff {e['diff']:+g}"
        action = f" -> {e['action']}" if "action" in e else ""
        field = f" field {e['field']}" if e.get("field") is not None else ""
        print(f"  [{e['status']}] {e['key']}{field} cache={e['cached']} truth={e['truth']}{diff}{action}")
    if fix:
        print(f"changed {merged['changed']}, skipped {merged['skipped']}")

# Findings left unrepaired (a repair of a key clears all of its findings' cause).
remaining = merged["drifted"]
if fix and not merged["dry_run"]:
    remaining -= merged["changed"]
sys.exit(1 if remaining > 0 else 0)
PY
