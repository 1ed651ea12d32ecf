//! TLS to PostgreSQL and where the password comes from, against real
//! clusters of the test's own: one with `ssl = on`, its certificates issued
//! by a certificate authority made here (rcgen), and one without TLS.
//!
//! The bridge is driven directly for the connection rules (sslmode, the
//! certificate files, ~/.pgpass, pg-password-file); the last tests go
//! through redis-server with the module (CONFIG SET, CHECK, STATUS).
//! Skipped, saying so, when initdb is not installed.

use crate::common;
use crate::fault_support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use consistency_bridge::{connect_direct, BridgeError, PgPool, PgSettings};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

use common::{as_str, call_err, call_ok, field, temp_dir, TestRedis};
use fault_support::OwnPg;

// ---------------------------------------------------------------------------
// The certificate authority, the clusters and the roles
// ---------------------------------------------------------------------------

/// Certificates for the clusters and clients, written under one directory.
struct Pki {
    dir: PathBuf,
    /// The CA that issued the server's and the client's certificates.
    ca: PathBuf,
    ca_pem: String,
    /// A CA that issued nothing here.
    other_ca: PathBuf,
    /// The server's certificate names only `localhost`.
    server_cert_pem: String,
    server_key_pem: String,
    /// A client certificate for the role `certuser`, its key 0600.
    client_cert: PathBuf,
    client_key: PathBuf,
    /// The same key, readable by everyone.
    client_key_open: PathBuf,
}

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn write_private(path: &Path, text: &str, mode: u32) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn make_pki() -> Pki {
    let dir = temp_dir("pki");
    let ca = new_ca("redis-consistency test CA");
    let other = new_ca("some other CA");

    let mut server = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    server
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate().unwrap();
    let server_cert = server.signed_by(&server_key, &ca).unwrap();

    let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
    client
        .distinguished_name
        .push(DnType::CommonName, "certuser");
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_key = KeyPair::generate().unwrap();
    let client_cert = client.signed_by(&client_key, &ca).unwrap();

    let pki = Pki {
        ca: dir.join("ca.pem"),
        ca_pem: ca.pem(),
        other_ca: dir.join("other-ca.pem"),
        server_cert_pem: server_cert.pem(),
        server_key_pem: server_key.serialize_pem(),
        client_cert: dir.join("client.crt"),
        client_key: dir.join("client.key"),
        client_key_open: dir.join("client-open.key"),
        dir,
    };
    fs::write(&pki.ca, &pki.ca_pem).unwrap();
    fs::write(&pki.other_ca, other.pem()).unwrap();
    fs::write(&pki.client_cert, client_cert.pem()).unwrap();
    write_private(&pki.client_key, &client_key.serialize_pem(), 0o600);
    write_private(&pki.client_key_open, &client_key.serialize_pem(), 0o644);
    pki
}

/// Roles that log in with a password (scram-sha-256 on the TLS cluster).
const PW_PGPASS: &str = "Pgpass-7Hq2x";
const PW_ROTATE_1: &str = "Rotate-one-4Kd";
const PW_ROTATE_2: &str = "Rotate-two-9Lm";
const PW_HOME: &str = "Home-pgpass-3Vb";
const PW_MODULE_1: &str = "Module-one-6Tz";
const PW_MODULE_2: &str = "Module-two-2Qw";
const PW_WRONG: &str = "Wrong-pass-8Xc";

struct World {
    pki: Pki,
    /// `ssl = on`; the server certificate names only `localhost`.
    tls: OwnPg,
    /// `ssl = off`.
    plain: OwnPg,
}

/// The clusters, started once per test process; `None` (and a printed reason)
/// without initdb.
fn world() -> Option<&'static World> {
    static WORLD: OnceLock<Option<World>> = OnceLock::new();
    WORLD
        .get_or_init(|| {
            if common::pg_bin("initdb").is_none() || common::pg_bin("pg_ctl").is_none() {
                eprintln!("skipped: initdb/pg_ctl are not installed (install PostgreSQL)");
                return None;
            }
            let pki = make_pki();
            let tls = OwnPg::start_configured(
                &[
                    "hostssl all certuser 127.0.0.1/32 cert",
                    "hostnossl all certuser 127.0.0.1/32 reject",
                    "host all pw_pgpass,pw_rotate,pw_home,pw_module 127.0.0.1/32 scram-sha-256",
                ],
                &[
                    ("server.crt", &pki.server_cert_pem),
                    ("server.key", &pki.server_key_pem),
                    ("ca.pem", &pki.ca_pem),
                ],
                &[
                    "ssl = on",
                    "ssl_cert_file = 'server.crt'",
                    "ssl_key_file = 'server.key'",
                    "ssl_ca_file = 'ca.pem'",
                    "password_encryption = 'scram-sha-256'",
                ],
            );
            tls.exec(&format!(
                "CREATE ROLE certuser LOGIN;
                 CREATE ROLE pw_pgpass LOGIN PASSWORD '{PW_PGPASS}';
                 CREATE ROLE pw_rotate LOGIN PASSWORD '{PW_ROTATE_1}';
                 CREATE ROLE pw_home LOGIN PASSWORD '{PW_HOME}';
                 CREATE ROLE pw_module LOGIN PASSWORD '{PW_MODULE_1}';"
            ));
            let plain = OwnPg::start();
            Some(World { pki, tls, plain })
        })
        .as_ref()
}

macro_rules! world_or_skip {
    () => {
        match world() {
            Some(w) => w,
            None => return,
        }
    };
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

// ---------------------------------------------------------------------------
// Bridge helpers
// ---------------------------------------------------------------------------

fn settings(url: &str) -> PgSettings {
    PgSettings {
        url: url.to_string(),
        connect_timeout: Duration::from_secs(5),
        pool_size: 2,
        ..PgSettings::default()
    }
}

fn connect(url: &str) -> Result<postgres::Client, BridgeError> {
    connect_direct(&settings(url), Duration::from_secs(5))
}

/// Whether this session is encrypted, as the server sees it.
fn uses_tls(client: &mut impl postgres::GenericClient) -> bool {
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0)
}

fn current_user(client: &mut postgres::Client) -> String {
    client
        .query_one("SELECT current_user::text", &[])
        .unwrap()
        .get(0)
}

/// The reason of an `Unavailable` error (anything else fails the test).
fn unavailable(r: Result<postgres::Client, BridgeError>) -> String {
    match r {
        Err(BridgeError::Unavailable(reason)) => reason,
        Err(other) => panic!("expected Unavailable, got {other:?}"),
        Ok(_) => panic!("connected, but should not have"),
    }
}

fn config_error(r: Result<postgres::Client, BridgeError>) -> String {
    match r {
        Err(BridgeError::Config(reason)) => reason,
        Err(other) => panic!("expected Config, got {other:?}"),
        Ok(_) => panic!("connected, but should not have"),
    }
}

// ---------------------------------------------------------------------------
// sslmode and the certificates
// ---------------------------------------------------------------------------

#[test]
fn verify_full_connects_when_the_certificate_names_the_host() {
    let w = world_or_skip!();
    let port = w.tls.port();
    let ca = path(&w.pki.ca);

    let url = format!(
        "host=localhost port={port} user=postgres dbname=postgres sslmode=verify-full sslrootcert='{ca}'"
    );
    let mut c = connect(&url).unwrap();
    assert!(uses_tls(&mut c));

    // The same through the pool, the root certificate given as the module's
    // config gives it (not in the url).
    let mut s = settings(&format!(
        "host=localhost port={port} user=postgres dbname=postgres sslmode=verify-full"
    ));
    s.ssl_files.rootcert = Some(ca.clone());
    let pool = PgPool::new(&s).unwrap();
    assert!(uses_tls(&mut *pool.get().unwrap()));

    // The URL form, the file in the query.
    let encoded = ca.replace('/', "%2F");
    let url = format!(
        "postgresql://postgres@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={encoded}"
    );
    assert!(uses_tls(&mut connect(&url).unwrap()));

    // verify-ca checks the chain, not the name: 127.0.0.1 is fine.
    let url = format!(
        "host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=verify-ca sslrootcert='{ca}'"
    );
    assert!(uses_tls(&mut connect(&url).unwrap()));
}

#[test]
fn verify_full_refuses_a_host_name_the_certificate_lacks() {
    let w = world_or_skip!();
    let url = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=verify-full sslrootcert='{}'",
        w.tls.port(),
        path(&w.pki.ca)
    );
    let reason = unavailable(connect(&url));
    assert_eq!(
        reason,
        "TLS: server certificate does not match host name '127.0.0.1' (it names localhost); \
         sslmode=verify-full checks the name: connect by a name it holds"
    );
}

#[test]
fn an_unknown_ca_is_refused_and_require_verifies_when_a_root_is_given() {
    let w = world_or_skip!();
    let port = w.tls.port();
    let other = path(&w.pki.other_ca);
    let base = format!("host=localhost port={port} user=postgres dbname=postgres");
    let want = format!(
        "TLS: server certificate is not signed by a trusted CA (checked against sslrootcert {other})"
    );

    for mode in ["verify-full", "verify-ca", "require"] {
        let url = format!("{base} sslmode={mode} sslrootcert='{other}'");
        assert_eq!(unavailable(connect(&url)), want, "sslmode={mode}");
    }

    // Without a root file, require encrypts without checking; verify-ca refuses.
    let missing = path(&w.pki.dir.join("no-such-ca.pem"));
    let url = format!("{base} sslmode=require sslrootcert='{missing}'");
    assert!(uses_tls(&mut connect(&url).unwrap()));
    let url = format!("{base} sslmode=verify-ca sslrootcert='{missing}'");
    let reason = config_error(connect(&url));
    assert!(
        reason.contains(&missing) && reason.contains("does not exist"),
        "{reason}"
    );

    // prefer falls back to a plain session when the handshake fails, as libpq does.
    let url = format!("{base} sslmode=prefer sslrootcert='{other}'");
    assert!(!uses_tls(&mut connect(&url).unwrap()));
    // disable never encrypts.
    assert!(!uses_tls(
        &mut connect(&format!("{base} sslmode=disable")).unwrap()
    ));
}

#[test]
fn require_against_a_server_without_tls_fails() {
    let w = world_or_skip!();
    let base = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres",
        w.plain.port()
    );
    assert_eq!(
        unavailable(connect(&format!("{base} sslmode=require"))),
        "TLS: server does not support TLS (sslmode=require needs TLS)"
    );
    assert_eq!(
        unavailable(connect(&format!(
            "{base} sslmode=verify-full sslrootcert='{}'",
            path(&w.pki.ca)
        ))),
        "TLS: server does not support TLS (sslmode=verify-full needs TLS)"
    );
    // prefer (the default) settles for plain.
    assert!(!uses_tls(&mut connect(&base).unwrap()));
}

#[test]
fn hostaddr_without_a_host_name() {
    let w = world_or_skip!();
    let base = format!(
        "hostaddr=127.0.0.1 port={} user=postgres dbname=postgres",
        w.tls.port()
    );
    // TLS needs a name to send: prefer settles for plain, require says why.
    assert!(!uses_tls(&mut connect(&base).unwrap()));
    assert_eq!(
        unavailable(connect(&format!("{base} sslmode=require"))),
        "TLS: pg-url gives hostaddr but no host; sslmode=require needs host= too \
         (the name TLS sends and checks)"
    );
    // With host= the name is checked while hostaddr is dialled.
    let url = format!(
        "host=localhost {base} sslmode=verify-full sslrootcert='{}'",
        path(&w.pki.ca)
    );
    assert!(uses_tls(&mut connect(&url).unwrap()));
}

#[test]
fn a_client_certificate_logs_in_as_its_user() {
    let w = world_or_skip!();
    let p = &w.pki;
    let base = format!(
        "host=localhost port={} user=certuser dbname=postgres sslmode=verify-full sslrootcert='{}'",
        w.tls.port(),
        path(&p.ca)
    );
    let url = format!(
        "{base} sslcert='{}' sslkey='{}'",
        path(&p.client_cert),
        path(&p.client_key)
    );
    let mut c = connect(&url).unwrap();
    assert_eq!(current_user(&mut c), "certuser");
    assert!(uses_tls(&mut c));

    // The files as the module's configs give them.
    let mut s = settings(&base);
    s.ssl_files.cert = Some(path(&p.client_cert));
    s.ssl_files.key = Some(path(&p.client_key));
    let mut c = connect_direct(&s, Duration::from_secs(5)).unwrap();
    assert_eq!(current_user(&mut c), "certuser");

    // No certificate (a missing file is no certificate, as in libpq): pg_hba's
    // `cert` line refuses.
    let none = format!("{base} sslcert='{}'", path(&p.dir.join("absent.crt")));
    let reason = unavailable(connect(&none));
    assert!(reason.contains("certificate"), "{reason}");

    // A key others may read is refused before connecting.
    let open = format!(
        "{base} sslcert='{}' sslkey='{}'",
        path(&p.client_cert),
        path(&p.client_key_open)
    );
    let reason = config_error(connect(&open));
    assert!(reason.contains("group or world access"), "{reason}");
}

// ---------------------------------------------------------------------------
// Passwords
// ---------------------------------------------------------------------------

#[test]
fn pgpass_gives_the_password_when_nothing_else_does() {
    let w = world_or_skip!();
    let port = w.tls.port();
    let dir = temp_dir("pgpass");
    let pgpass = dir.join("pgpass");
    // The first line is for another host name: only the second matches.
    write_private(
        &pgpass,
        &format!(
            "# host:port:database:user:password\n\
             localhost:{port}:postgres:pw_pgpass:{PW_WRONG}\n\
             127.0.0.1:{port}:*:pw_pgpass:{PW_PGPASS}\n"
        ),
        0o600,
    );
    let base = format!("host=127.0.0.1 port={port} user=pw_pgpass dbname=postgres");
    let url = format!("{base} passfile='{}'", path(&pgpass));
    let mut c = connect(&url).unwrap();
    assert_eq!(current_user(&mut c), "pw_pgpass");

    // A password in pg-url wins over the file.
    let reason = unavailable(connect(&format!("{url} password={PW_WRONG}")));
    assert!(
        reason.contains("password authentication failed"),
        "{reason}"
    );

    // A matching line with the wrong password: the error says which file.
    let localhost = format!(
        "host=localhost port={port} user=pw_pgpass dbname=postgres passfile='{}'",
        path(&pgpass)
    );
    let reason = unavailable(connect(&localhost));
    assert!(
        reason.contains("password authentication failed")
            && reason.ends_with(&format!("(password from {})", path(&pgpass))),
        "{reason}"
    );
    assert!(!reason.contains(PW_WRONG), "{reason}");

    // A file others may read is ignored, and the error says so.
    fs::set_permissions(&pgpass, fs::Permissions::from_mode(0o644)).unwrap();
    let reason = unavailable(connect(&url));
    assert!(
        reason.contains("none is configured") && reason.contains("group or world access"),
        "{reason}"
    );
    assert!(!reason.contains(PW_PGPASS), "{reason}");

    // No file at all.
    let reason = unavailable(connect(&format!(
        "{base} passfile='{}'",
        path(&dir.join("absent"))
    )));
    assert!(reason.contains("none is configured"), "{reason}");
}

#[test]
fn a_rotated_password_file_is_used_without_rebuilding_the_pool() {
    let w = world_or_skip!();
    let dir = temp_dir("pwfile");
    let file = dir.join("password");
    fs::write(&file, format!("{PW_ROTATE_1}\n")).unwrap();
    let mut s = settings(&format!(
        "host=127.0.0.1 port={} user=pw_rotate dbname=postgres",
        w.tls.port()
    ));
    s.password_file = Some(path(&file));
    let pool = PgPool::new(&s).unwrap();
    assert_eq!(current_user(&mut pool.get().unwrap()), "pw_rotate");

    let drop_sessions = || {
        w.tls.exec(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'pw_rotate'",
        )
    };

    // The password changes in PostgreSQL and in the file; open sessions are
    // ended, so the pool must log in again, with the new password.
    w.tls
        .exec(&format!("ALTER ROLE pw_rotate PASSWORD '{PW_ROTATE_2}'"));
    fs::write(&file, format!("{PW_ROTATE_2}\n")).unwrap();
    drop_sessions();
    assert_eq!(current_user(&mut pool.get().unwrap()), "pw_rotate");

    // A wrong file: the error names the file, not the password.
    fs::write(&file, format!("{PW_WRONG}\n")).unwrap();
    drop_sessions();
    let reason = match pool.get() {
        Err(BridgeError::Unavailable(r)) => r,
        other => panic!(
            "expected Unavailable, got {:?}",
            other.map(|_| "a connection")
        ),
    };
    assert!(
        reason.contains("password authentication failed")
            && reason.ends_with(&format!("(password from pg-password-file {})", path(&file))),
        "{reason}"
    );
    assert!(!reason.contains(PW_WRONG), "{reason}");

    // Put right again: the same pool logs in.
    fs::write(&file, format!("{PW_ROTATE_2}\n")).unwrap();
    assert_eq!(current_user(&mut pool.get().unwrap()), "pw_rotate");
}

// ---------------------------------------------------------------------------
// Through the module
// ---------------------------------------------------------------------------

/// A rule whose truth is whether the session checking it is encrypted: key
/// `tls:1` is consistent at "1" only over TLS.
fn tls_rule_file() -> PathBuf {
    common::write_rules(&[serde_json::json!({
        "name": "tls",
        "kind": "number",
        "key": "tls:{id}",
        "truth": "SELECT 1, ssl::int FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        "threshold": 0.0
    })])
}

fn check_json(c: &mut redis::Connection) -> serde_json::Value {
    let text = as_str(&call_ok(c, &["CONSISTENCY.CHECK", "FORMAT", "json"])).to_string();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn last_error(c: &mut redis::Connection) -> String {
    let status = call_ok(c, &["CONSISTENCY.STATUS"]);
    as_str(field(field(&status, "pg"), "last_error")).to_string()
}

fn set(c: &mut redis::Connection, key: &str, value: &str) {
    call_ok(c, &["SET", key, value]);
}

#[test]
fn the_module_checks_over_verify_full_tls() {
    let w = world_or_skip!();
    let port = w.tls.port();
    let rules = path(&tls_rule_file());
    let ca = path(&w.pki.ca);
    let url =
        format!("host=localhost port={port} user=postgres dbname=postgres sslmode=verify-full");
    let redis = TestRedis::start(&[
        ("pg-url", &url),
        ("pg-sslrootcert", &ca),
        ("rules-file", &rules),
    ]);
    let mut c = redis.conn();

    // The truth comes over TLS: "1", so a cached "0" drifts by exactly 1.
    set(&mut c, "tls:1", "0");
    let report = check_json(&mut c);
    assert_eq!(report["drifted"], 1, "{report}");
    assert_eq!(report["entries"][0]["truth"], "1", "{report}");
    set(&mut c, "tls:1", "1");
    let report = check_json(&mut c);
    assert_eq!(
        (report["checked"].clone(), report["drifted"].clone()),
        (1.into(), 0.into())
    );

    let status = call_ok(&mut c, &["CONSISTENCY.STATUS"]);
    assert_eq!(
        as_str(field(field(&status, "pg"), "url")),
        format!("host=localhost port={port} user=postgres dbname=postgres sslmode=verify-full")
    );
    let got = call_ok(&mut c, &["CONFIG", "GET", "consistency.pg-sslrootcert"]);
    assert_eq!(format!("{got:?}").matches(&ca).count(), 1, "{got:?}");

    // By address, the name check fails: CHECK's error and STATUS say why.
    let by_ip = url.replace("host=localhost", "host=127.0.0.1");
    call_ok(&mut c, &["CONFIG", "SET", "consistency.pg-url", &by_ip]);
    let err = call_err(&mut c, &["CONSISTENCY.CHECK"]);
    assert!(
        err.starts_with(
            "ERR postgres unavailable: TLS: server certificate does not match host name '127.0.0.1'"
        ),
        "{err}"
    );
    assert!(
        last_error(&mut c).contains("does not match host name '127.0.0.1'"),
        "{}",
        last_error(&mut c)
    );

    // Another CA, set at runtime.
    call_ok(&mut c, &["CONFIG", "SET", "consistency.pg-url", &url]);
    let other = path(&w.pki.other_ca);
    call_ok(
        &mut c,
        &["CONFIG", "SET", "consistency.pg-sslrootcert", &other],
    );
    let err = call_err(&mut c, &["CONSISTENCY.CHECK"]);
    assert!(
        err.contains("server certificate is not signed by a trusted CA"),
        "{err}"
    );

    // Back to the right CA: checks run again without a restart.
    call_ok(
        &mut c,
        &["CONFIG", "SET", "consistency.pg-sslrootcert", &ca],
    );
    assert_eq!(check_json(&mut c)["drifted"], 0);
}

#[test]
fn the_module_reads_home_defaults_and_a_rotated_password_file() {
    let w = world_or_skip!();
    let port = w.tls.port();
    // HOME as libpq reads it: ~/.pgpass and ~/.postgresql/root.crt.
    let home = temp_dir("home");
    write_private(
        &home.join(".pgpass"),
        &format!("localhost:{port}:postgres:pw_home:{PW_HOME}\n"),
        0o600,
    );
    fs::create_dir_all(home.join(".postgresql")).unwrap();
    fs::write(home.join(".postgresql").join("root.crt"), &w.pki.ca_pem).unwrap();
    let rules = path(&tls_rule_file());
    let url =
        format!("host=localhost port={port} user=pw_home dbname=postgres sslmode=verify-full");
    let redis = TestRedis::start_with_env(
        &[("pg-url", &url), ("rules-file", &rules)],
        &["loglevel debug"],
        &[("HOME", &path(&home))],
    );
    let mut c = redis.conn();
    set(&mut c, "tls:1", "1");
    let report = check_json(&mut c);
    assert_eq!(
        (report["checked"].clone(), report["drifted"].clone()),
        (1.into(), 0.into()),
        "{report}"
    );

    // pg-password-file is set at runtime now, and wins over ~/.pgpass.
    let dir = temp_dir("modpw");
    let file = dir.join("password");
    fs::write(&file, format!("{PW_MODULE_1}\n")).unwrap();
    let module_url = url.replace("user=pw_home", "user=pw_module");
    call_ok(
        &mut c,
        &["CONFIG", "SET", "consistency.pg-url", &module_url],
    );
    let err = call_err(&mut c, &["CONSISTENCY.CHECK"]);
    assert!(err.contains("password"), "{err}");
    call_ok(
        &mut c,
        &[
            "CONFIG",
            "SET",
            "consistency.pg-password-file",
            &path(&file),
        ],
    );
    assert_eq!(check_json(&mut c)["drifted"], 0);

    // Rotation: PostgreSQL and the file change, sessions end; no CONFIG SET.
    w.tls
        .exec(&format!("ALTER ROLE pw_module PASSWORD '{PW_MODULE_2}'"));
    fs::write(&file, format!("{PW_MODULE_2}\n")).unwrap();
    w.tls
        .exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'pw_module'");
    assert_eq!(check_json(&mut c)["drifted"], 0);

    // A file that cannot be read is refused, and the one in force stays.
    let absent = path(&dir.join("absent"));
    let err = call_err(
        &mut c,
        &["CONFIG", "SET", "consistency.pg-password-file", &absent],
    );
    assert!(err.contains("cannot read pg-password-file"), "{err}");
    let got = call_ok(&mut c, &["CONFIG", "GET", "consistency.pg-password-file"]);
    assert!(format!("{got:?}").contains(&path(&file)), "{got:?}");
    assert_eq!(check_json(&mut c)["drifted"], 0);

    // No password shown anywhere.
    let mut seen = format!("{:?}", call_ok(&mut c, &["CONSISTENCY.STATUS"]));
    seen.push_str(as_str(&call_ok(&mut c, &["INFO", "everything"])));
    seen.push_str(&redis.log());
    for pw in [PW_HOME, PW_MODULE_1, PW_MODULE_2] {
        assert!(!seen.contains(pw), "password {pw} shown");
    }
}
