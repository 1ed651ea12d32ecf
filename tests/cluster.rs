//! Redis Cluster: three primaries on loopback ports, each with the module. The
//! merged report of scripts/cluster-check.sh must equal a single node's report on
//! the same data, and FIX ALL must repair every shard.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{call_ok, free_port, ledger, wait_until, write_rules, TestPg, TestRedis};
use redis_consistency::cluster::key_slot;
use serde_json::{json, Value};

const USERS: usize = 3000;

fn rules() -> Vec<Value> {
    vec![
        json!({"name": "cost_weekly", "kind": "number", "key": "user:{{id}}:cost_weekly",
               "truth": ledger::WEEKLY_TRUTH, "threshold": 5.0}),
        json!({"name": "cost_monthly", "kind": "number", "key": "user:{{id}}:cost_monthly",
               "truth": ledger::MONTHLY_TRUTH, "threshold": 5.0}),
        json!({"name": "mcp_connection", "kind": "presence", "key": "mcp:connection:state:{{id}}",
               "truth": ledger::PRESENCE_TRUTH}),
    ]
}

/// Every key the test writes, with its value, before drift.
fn cache_contents(pg: &TestPg) -> BTreeMap<String, String> {
    let mut keys = BTreeMap::new();
    for (id, v) in ledger::truth_weekly(pg) {
        keys.insert(format!("user:{{{id}}}:cost_weekly"), v);
    }
    for (id, v) in ledger::truth_monthly(pg) {
        keys.insert(format!("user:{{{id}}}:cost_monthly"), v);
    }
    for n in 0..40 {
        if n != 7 {
            keys.insert(
                format!("mcp:connection:state:{{ep{n}}}"),
                "connected".into(),
            );
        }
    }
    keys
}

/// Drift on keys spread over every shard: values, garbage, orphans.
fn drift() -> Vec<(String, String)> {
    let mut d: Vec<(String, String)> = (1..=60)
        .map(|i| {
            (
                format!("user:{{{}}}:cost_weekly", i * 47),
                format!("{}.5", 100 + i),
            )
        })
        .collect();
    d.push(("user:{5}:cost_monthly".into(), "abc".into()));
    d.push(("user:{999999}:cost_weekly".into(), "1".into()));
    d.push(("mcp:connection:state:{ghost}".into(), "connected".into()));
    d
}

fn prepare_pg() -> TestPg {
    let pg = TestPg::fresh();
    ledger::create_schema(&pg);
    ledger::load(&pg, USERS, 2, 11);
    for n in 0..40 {
        ledger::add_endpoint(&pg, &format!("ep{n}"), true);
    }
    pg
}

struct Cluster {
    nodes: Vec<TestRedis>,
    /// For each node index, the slot ranges it serves.
    ranges: Vec<Vec<(u16, u16)>>,
}

impl Cluster {
    fn start(pg: &TestPg, rules_file: &Path) -> Cluster {
        let url = pg.url();
        let rules = rules_file.display().to_string();
        let nodes: Vec<TestRedis> = (0..3)
            .map(|_| {
                let bus = free_port().to_string();
                let lines = [
                    "cluster-enabled yes".to_string(),
                    format!("cluster-port {bus}"),
                    "cluster-config-file nodes.conf".to_string(),
                    "cluster-node-timeout 5000".to_string(),
                ];
                let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
                TestRedis::start_with(&[("pg-url", &url), ("rules-file", &rules)], &lines)
            })
            .collect();
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for n in &nodes {
            create.arg(format!("127.0.0.1:{}", n.port()));
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        for n in &nodes {
            let ok = wait_until(Duration::from_secs(20), || {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut n.conn())
                    .unwrap();
                info.contains("cluster_state:ok")
            });
            assert!(ok, "cluster did not become ok");
        }
        let slots: Vec<Vec<Value>> = {
            let v: redis::Value = redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query(&mut nodes[0].conn())
                .unwrap();
            to_json(&v)
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e.as_array().unwrap().clone())
                .collect()
        };
        let ranges = nodes
            .iter()
            .map(|n| {
                slots
                    .iter()
                    .filter(|e| e[2][1].as_i64() == Some(i64::from(n.port())))
                    .map(|e| (e[0].as_i64().unwrap() as u16, e[1].as_i64().unwrap() as u16))
                    .collect()
            })
            .collect();
        Cluster { nodes, ranges }
    }

    fn node_of(&self, key: &str) -> usize {
        let slot = key_slot(key.as_bytes());
        self.ranges
            .iter()
            .position(|r| r.iter().any(|&(a, b)| (a..=b).contains(&slot)))
            .expect("every slot is served")
    }

    fn set_all(&self, pairs: &[(String, String)]) {
        let mut conns: Vec<redis::Connection> = self.nodes.iter().map(TestRedis::conn).collect();
        let mut pipes: Vec<redis::Pipeline> = self.nodes.iter().map(|_| redis::pipe()).collect();
        for (k, v) in pairs {
            pipes[self.node_of(k)].cmd("SET").arg(k).arg(v).ignore();
        }
        for (p, c) in pipes.iter().zip(conns.iter_mut()) {
            p.query::<()>(c).expect("pipelined SET");
        }
    }

    fn check_script(&self, args: &[&str]) -> (i32, Value) {
        let out = Command::new("bash")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/scripts/cluster-check.sh"
            ))
            .args([
                "-p",
                &self.nodes[0].port().to_string(),
                "--json",
                "--limit",
                "100000",
            ])
            .args(args)
            .output()
            .expect("cluster-check.sh");
        let text = String::from_utf8_lossy(&out.stdout);
        let report = serde_json::from_str(text.trim())
            .unwrap_or_else(|e| panic!("{e}: {text} {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code().unwrap_or(-1), report)
    }
}

fn to_json(v: &redis::Value) -> Value {
    match v {
        redis::Value::Int(i) => json!(i),
        redis::Value::BulkString(b) => json!(String::from_utf8_lossy(b)),
        redis::Value::SimpleString(s) => json!(s),
        redis::Value::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        _ => Value::Null,
    }
}

/// What must agree between the single-node and the merged cluster report.
fn summary(report: &Value) -> (Value, BTreeSet<String>) {
    let fields = json!({
        "checked": report["checked"], "ids": report["ids"], "drifted": report["drifted"],
        "by_status": report["by_status"], "by_rule": report["by_rule"],
        "max_diff": report["max_diff"], "max_diff_key": report["max_diff_key"],
    });
    let entries = report["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {} {} {} {}",
                e["rule"], e["key"], e["status"], e["cached"], e["truth"]
            )
        })
        .collect();
    (fields, entries)
}

#[test]
fn merged_cluster_report_equals_single_node_and_fix_all_repairs_every_shard() {
    let pg = prepare_pg();
    let rules_file = write_rules(&rules());
    let contents: Vec<(String, String)> = cache_contents(&pg).into_iter().collect();
    let drift = drift();

    // The same data on one node: the reference report.
    let single = TestRedis::start_for(&pg, &rules_file, &[]);
    let mut c = single.conn();
    for chunk in contents.chunks(1000).chain(drift.chunks(1000)) {
        let mut p = redis::pipe();
        for (k, v) in chunk {
            p.cmd("SET").arg(k).arg(v).ignore();
        }
        p.query::<()>(&mut c).unwrap();
    }
    let text: String = redis::cmd("CONSISTENCY.CHECK")
        .arg("LIMIT")
        .arg(100000)
        .arg("FORMAT")
        .arg("json")
        .query(&mut c)
        .unwrap();
    let reference: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(reference["by_status"]["missing"], 1, "ep7 has no key");
    assert!(reference["drifted"].as_i64().unwrap() >= 63);

    let cluster = Cluster::start(&pg, &rules_file);
    cluster.set_all(&contents);
    cluster.set_all(&drift);
    let shards_with_drift: BTreeSet<usize> =
        drift.iter().map(|(k, _)| cluster.node_of(k)).collect();
    assert_eq!(shards_with_drift.len(), 3, "drift lands on every shard");

    let (code, merged) = cluster.check_script(&[]);
    assert_eq!(code, 1, "drift remains: exit 1");
    assert_eq!(summary(&merged), summary(&reference));
    for shard in merged["shards"].as_array().unwrap() {
        assert!(
            shard["drifted"].as_i64().unwrap() > 0,
            "every shard found drift: {shard}"
        );
    }

    // FIX ALL on every primary, then only the missing presence key remains.
    let (_, fixed) = cluster.check_script(&["--fix"]);
    assert_eq!(
        fixed["changed"].as_i64().unwrap(),
        reference["drifted"].as_i64().unwrap() - 1
    );
    let (code, after) = cluster.check_script(&[]);
    assert_eq!(after["drifted"], 1, "{after}");
    assert_eq!(after["by_status"]["missing"], 1);
    assert_eq!(code, 1, "a missing key cannot be created by us");
    for (key, _) in &drift {
        let node = &cluster.nodes[cluster.node_of(key)];
        let v: Option<String> = redis::cmd("GET").arg(key).query(&mut node.conn()).unwrap();
        assert_eq!(v, None, "{key} was repaired (deleted)");
    }
}

#[test]
fn id_scoped_commands_skip_keys_of_foreign_slots() {
    let pg = prepare_pg();
    let rules_file = write_rules(&rules());
    let cluster = Cluster::start(&pg, &rules_file);
    let contents: Vec<(String, String)> = cache_contents(&pg).into_iter().collect();
    cluster.set_all(&contents);
    let key = "user:{4}:cost_weekly";
    let owner = cluster.node_of(key);
    let other = (owner + 1) % 3;
    cluster.set_all(&[(key.to_string(), "50.1".to_string())]);

    // On a node that does not own user 4's slot: nothing reported, nothing missing.
    let text: String = redis::cmd("CONSISTENCY.CHECK")
        .arg("ID")
        .arg("4")
        .arg("FORMAT")
        .arg("json")
        .query(&mut cluster.nodes[other].conn())
        .unwrap();
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["drifted"], 0, "{report}");
    assert_eq!(report["checked"], 0, "{report}");

    // FIX there skips the keys as not local; on the owner it deletes them.
    let text: String = redis::cmd("CONSISTENCY.FIX")
        .arg("4")
        .arg("RULE")
        .arg("cost_weekly")
        .arg("FORMAT")
        .arg("json")
        .query(&mut cluster.nodes[other].conn())
        .unwrap();
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        report["entries"][0]["action"], "skipped_not_local",
        "{report}"
    );
    assert_eq!(report["changed"], 0);
    let text: String = redis::cmd("CONSISTENCY.CHECK")
        .arg("ID")
        .arg("4")
        .arg("FORMAT")
        .arg("json")
        .query(&mut cluster.nodes[owner].conn())
        .unwrap();
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["by_status"]["drift"], 1, "{report}");
    let _ = call_ok(
        &mut cluster.nodes[owner].conn(),
        &["CONSISTENCY.FIX", "4", "RULE", "cost_weekly"],
    );
    let v: Option<String> = redis::cmd("GET")
        .arg(key)
        .query(&mut cluster.nodes[owner].conn())
        .unwrap();
    assert_eq!(v, None);
}

#[test]
fn audit_stream_lands_on_a_local_slot() {
    let pg = prepare_pg();
    let rules_file = write_rules(&rules());
    let cluster = Cluster::start(&pg, &rules_file);
    let contents: Vec<(String, String)> = cache_contents(&pg).into_iter().collect();
    cluster.set_all(&contents);
    for (i, node) in cluster.nodes.iter().enumerate() {
        let _ = call_ok(
            &mut node.conn(),
            &[
                "CONFIG",
                "SET",
                "consistency.audit-stream",
                "consistency:audit",
            ],
        );
        // A drifted key this node owns, repaired by FIX ALL on this node.
        let key = (1..USERS)
            .map(|id| format!("user:{{{id}}}:cost_weekly"))
            .find(|k| cluster.node_of(k) == i)
            .unwrap();
        cluster.set_all(&[(key.clone(), "900".into())]);
        let _ = call_ok(&mut node.conn(), &["CONSISTENCY.FIX", "ALL"]);
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("consistency:audit*")
            .query(&mut node.conn())
            .unwrap();
        assert_eq!(keys.len(), 1, "node {i}: {keys:?}");
        assert_eq!(
            cluster.node_of(&keys[0]),
            i,
            "the stream {} is local",
            keys[0]
        );
        let len: i64 = redis::cmd("XLEN")
            .arg(&keys[0])
            .query(&mut node.conn())
            .unwrap();
        assert_eq!(len, 1);
    }
}
