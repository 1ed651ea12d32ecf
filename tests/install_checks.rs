//! Installing the module.
//!
//! - The "is it there?" tests of scripts/lib.sh look for the exact files that will
//!   be used. bindgen (building redis-module) loads libclang through clang-sys,
//!   which looks for `libclang.so`, `libclang-<version>.so[.N]` or `libclang.so.N`
//!   and never `libclang-cpp`; it also needs clang's builtin headers. A machine
//!   with only libclang-cpp (the base image) must be told libclang is missing, so
//!   that scripts/test.sh and scripts/demo.sh install libclang-dev.
//! - scripts/package.sh builds the Debian package: its control fields and files,
//!   and Debian's redis-server loading the module through the packaged conf
//!   snippet from a Debian-style redis.conf, all in a temporary root.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `have_libclang ROOT` from scripts/lib.sh with clang-sys's own search
/// variables cleared; returns (found, what it printed on stderr).
fn have_libclang(root: &Path) -> (bool, String) {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lib.sh");
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#". "$1"; have_libclang "$2""#)
        .arg("have_libclang")
        .arg(&lib)
        .arg(root)
        .env_remove("LIBCLANG_PATH")
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("LIBRARY_PATH")
        .output()
        .expect("run bash");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A fresh directory standing for a machine's root.
fn temp_root(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "rc-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn touch(root: &Path, relative: &str) -> PathBuf {
    let path = root.join(relative);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, b"\x7fELF").unwrap();
    path
}

#[test]
fn libclang_cpp_alone_is_missing() {
    let root = temp_root("libclang-cpp-only");
    // What the base image ships: libclang-cpp14, in both places Debian puts it.
    touch(&root, "usr/lib/x86_64-linux-gnu/libclang-cpp.so.14");
    touch(&root, "usr/lib/llvm-14/lib/libclang-cpp.so.14");
    touch(&root, "usr/lib/llvm-14/lib/libclang-cpp.so");
    let (found, said) = have_libclang(&root);
    assert!(!found, "libclang-cpp is not libclang: {said}");
    assert!(said.contains("libclang missing"), "{said}");
    assert!(said.contains("libclang shared library"), "{said}");
}

#[test]
fn a_library_without_clang_headers_is_missing() {
    let root = temp_root("libclang-no-headers");
    touch(&root, "usr/lib/x86_64-linux-gnu/libclang-14.so.1");
    let (found, said) = have_libclang(&root);
    assert!(!found, "{said}");
    assert!(said.contains("clang builtin headers"), "{said}");
    assert!(!said.contains("libclang shared library"), "{said}");
}

#[test]
fn what_libclang_dev_installs_is_found() {
    // The files of Debian's libclang1-14 and libclang-common-14-dev.
    for library in [
        "usr/lib/llvm-14/lib/libclang.so",
        "usr/lib/x86_64-linux-gnu/libclang-14.so.1",
        "usr/lib/llvm-14/lib/libclang.so.1",
        "usr/lib/x86_64-linux-gnu/libclang-14.so",
    ] {
        let root = temp_root("libclang-dev");
        touch(&root, "usr/lib/x86_64-linux-gnu/libclang-cpp.so.14");
        touch(&root, library);
        touch(&root, "usr/lib/llvm-14/lib/clang/14.0.6/include/stddef.h");
        let (found, said) = have_libclang(&root);
        assert!(found, "{library}: {said}");
    }
}

// ---------------------------------------------------------------------------
// The Debian package
// ---------------------------------------------------------------------------

/// Runs `program args`, panicking with its output unless it succeeds; its stdout.
fn run_ok(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Whether Debian's dpkg version order puts `a` at or above `b`.
fn version_at_least(a: &str, b: &str) -> bool {
    Command::new("dpkg")
        .args(["--compare-versions", a, "ge", b])
        .status()
        .expect("run dpkg --compare-versions")
        .success()
}

/// `text` with `from` replaced by `to` on exactly one line.
fn replace_one_line(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.lines().filter(|l| *l == from).count(),
        1,
        "want exactly one line {from:?} in:\n{text}"
    );
    text.lines()
        .map(|l| if l == from { to } else { l })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

const SO: &str = "usr/lib/redis/modules/libredis_consistency.so";
const SNIPPET: &str = "etc/redis/redis-consistency.conf";
const DOC: &str = "usr/share/doc/redis-consistency";

#[test]
fn debian_package_installs_a_module_debians_redis_server_loads() {
    let debian_server = Path::new("/usr/bin/redis-server");
    let runs = |program: &str| Command::new(program).arg("--version").output().is_ok();
    if !runs("dpkg-deb") || !debian_server.is_file() {
        eprintln!("SKIPPED debian_package_...: needs dpkg-deb and Debian's /usr/bin/redis-server");
        return;
    }
    // package.sh installs dpkg-dev and binutils only as root.
    let tools = runs("dpkg-shlibdeps") && runs("strip");
    if !(tools || common::is_root()) {
        eprintln!(
            "SKIPPED debian_package_...: needs dpkg-dev and binutils (or root to install them)"
        );
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = common::temp_dir("deb-out");
    let maintainer = "Package Test <package-test@example.invalid>";
    // The module the other tests load: building a release one here would replace
    // it under their feet (package.sh alone builds without test hooks).
    let module = common::module_path();
    let built = Command::new(repo.join("scripts/package.sh"))
        .arg("--module")
        .arg(&module)
        .arg("--out")
        .arg(&out)
        .env("DEB_MAINTAINER", maintainer)
        .env_remove("DEB_REVISION")
        .output()
        .expect("run scripts/package.sh");
    assert!(
        built.status.success(),
        "package.sh: {}\n{}",
        built.status,
        String::from_utf8_lossy(&built.stderr)
    );
    let arch = run_ok("dpkg", &["--print-architecture"]);
    let version = env!("CARGO_PKG_VERSION");
    let deb = out.join(format!("redis-consistency_{version}-1_{}.deb", arch.trim()));
    assert_eq!(
        String::from_utf8_lossy(&built.stdout).trim(),
        deb.display().to_string(),
        "package.sh prints the path of the .deb"
    );
    let deb = deb.to_str().unwrap();

    // Control fields.
    let field = |name: &str| run_ok("dpkg-deb", &["-f", deb, name]).trim().to_string();
    assert_eq!(field("Package"), "redis-consistency");
    assert_eq!(field("Version"), format!("{version}-1"));
    assert_eq!(field("Architecture"), arch.trim());
    assert_eq!(field("Maintainer"), maintainer);
    let depends = field("Depends");
    assert!(
        depends.starts_with("redis-server (>= 5:7.0), "),
        "{depends}"
    );
    assert!(depends.contains("libc6 (>= "), "{depends}");
    // Debian's redis-server has epoch 5: the bound must refuse its 6.x and
    // accept the 7.x installed here.
    let bound = "5:7.0";
    assert!(!version_at_least("5:6.0.16-1+deb11u2", bound));
    let installed = run_ok("dpkg-query", &["-W", "-f=${Version}", "redis-server"]);
    assert!(version_at_least(&installed, bound), "{installed}");
    let info = run_ok("dpkg-deb", &["-I", deb]);
    assert!(info.contains(" conffiles"), "{info}");
    assert_eq!(
        run_ok("dpkg-deb", &["-I", deb, "conffiles"]),
        format!("/{SNIPPET}\n")
    );

    // Exactly these files, owned by root; only the module executable (Redis 7
    // refuses to load a module file without execute permission).
    let listing = run_ok("dpkg-deb", &["-c", deb]);
    let mut files = Vec::new();
    for line in listing.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols[1], "root/root", "{line}");
        let path = cols[5].trim_start_matches("./");
        if cols[0].starts_with('-') {
            let mode = if path == SO {
                "-rwxr-xr-x"
            } else {
                "-rw-r--r--"
            };
            assert_eq!(cols[0], mode, "{line}");
            files.push(path.to_string());
        } else {
            assert_eq!(cols[0], "drwxr-xr-x", "{line}");
        }
    }
    files.sort();
    let mut want: Vec<String> = [
        SNIPPET,
        SO,
        "usr/share/doc/redis-consistency/LICENSE-APACHE",
        "usr/share/doc/redis-consistency/LICENSE-MIT",
        "usr/share/doc/redis-consistency/OPERATIONS.md.gz",
        "usr/share/doc/redis-consistency/README.md.gz",
        "usr/share/doc/redis-consistency/REFERENCE.md.gz",
        "usr/share/doc/redis-consistency/changelog.Debian.gz",
        "usr/share/doc/redis-consistency/copyright",
        "usr/share/doc/redis-consistency/examples/rules.example.json",
        "usr/share/doc/redis-consistency/examples/rules.seed004.example.json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    want.sort();
    assert_eq!(files, want);

    // Installed into a temporary root; md5sums matches what was installed.
    let root = common::temp_dir("deb-root");
    let root_s = root.to_str().unwrap();
    run_ok("dpkg", &["-x", deb, root_s]);
    let sums = run_ok("dpkg-deb", &["-I", deb, "md5sums"]);
    assert_eq!(sums.lines().count(), want.len(), "{sums}");
    let checked = Command::new("md5sum")
        .args(["--check", "--strict", "--quiet", "-"])
        .current_dir(&root)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(sums.as_bytes())?;
            c.wait()
        })
        .expect("md5sum");
    assert!(
        checked.success(),
        "md5sums does not match the files:\n{sums}"
    );
    let so = fs::read(root.join(SO)).unwrap();
    assert!(
        !so.windows(7).any(|w| w == b".symtab"),
        "the module is not stripped"
    );
    for (name, text) in [
        ("LICENSE-APACHE", "Apache License"),
        ("LICENSE-MIT", "MIT License"),
    ] {
        let shipped = fs::read_to_string(root.join(DOC).join(name)).unwrap();
        assert_eq!(shipped, fs::read_to_string(repo.join(name)).unwrap());
        assert!(shipped.contains(text));
    }
    let copyright = fs::read_to_string(root.join(DOC).join("copyright")).unwrap();
    assert!(copyright.starts_with(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
    ));
    assert!(
        copyright.contains("\nLicense: Apache-2.0 or MIT\n"),
        "{copyright}"
    );
    // Statically linked crates are named, and a BSD one's notice is reproduced.
    assert!(copyright.contains("\n serde_json "), "{copyright}");
    assert!(
        copyright.contains("\nLicense: BSD-3-Clause\n"),
        "{copyright}"
    );
    assert!(copyright.contains(" Redistribution and use in source and binary forms"));
    assert_eq!(
        fs::read(root.join(DOC).join("examples/rules.example.json")).unwrap(),
        fs::read(repo.join("rules.example.json")).unwrap()
    );

    // The snippet is redis.conf.example pointing at the installed module.
    let snippet = fs::read_to_string(root.join(SNIPPET)).unwrap();
    let example = fs::read_to_string(repo.join("redis.conf.example")).unwrap();
    assert!(
        snippet.ends_with(&example.replace(
            "/path/to/libredis_consistency.so",
            "/usr/lib/redis/modules/libredis_consistency.so"
        )),
        "{snippet}"
    );
    assert!(snippet.contains("#   include /etc/redis/redis-consistency.conf\n"));

    // What its header tells the operator to do, with paths into the temp root:
    // the rules where it says, and rules-file set.
    let rules = root.join("etc/redis/consistency-rules.json");
    fs::copy(root.join(DOC).join("examples/rules.example.json"), &rules).unwrap();
    let so_path = root.join(SO);
    let edited = replace_one_line(
        &snippet,
        "loadmodule /usr/lib/redis/modules/libredis_consistency.so",
        &format!(
            "loadmodule {}",
            common::quote_conf(so_path.to_str().unwrap())
        ),
    );
    let edited = replace_one_line(
        &edited,
        "# consistency.rules-file \"\"",
        &format!(
            "consistency.rules-file {}",
            common::quote_conf(rules.to_str().unwrap())
        ),
    );
    fs::write(root.join(SNIPPET), edited).unwrap();

    // A redis.conf laid out like the one Debian's redis-server ships (its
    // pidfile, logfile and dir; the include last, as its comments advise for
    // options that override), run in the foreground instead of under systemd.
    let port = common::free_port();
    let data = root.join("var/lib/redis");
    let logs = root.join("var/log/redis");
    let run = root.join("run/redis");
    for d in [&data, &logs, &run] {
        fs::create_dir_all(d).unwrap();
    }
    let log = logs.join("redis-server.log");
    let q = |p: &Path| common::quote_conf(p.to_str().unwrap());
    let conf = format!(
        "# Redis configuration file, laid out as Debian's /etc/redis/redis.conf\n\
         bind 127.0.0.1\n\
         protected-mode yes\n\
         port {port}\n\
         daemonize no\n\
         supervised no\n\
         pidfile {pid}\n\
         loglevel notice\n\
         logfile {log}\n\
         databases 16\n\
         save \"\"\n\
         dir {dir}\n\
         include {snippet}\n",
        pid = q(&run.join("redis-server.pid")),
        log = q(&log),
        dir = q(&data),
        snippet = q(&root.join(SNIPPET)),
    );
    let conf_path = root.join("etc/redis/redis.conf");
    fs::write(&conf_path, conf).unwrap();
    let redis = common::TestRedis::start_conf(debian_server, &conf_path, port, &data, &log);
    let mut c = redis.conn();

    let modules = common::call_ok(&mut c, &["MODULE", "LIST"]);
    let modules = common::as_array(&modules);
    assert_eq!(modules.len(), 1, "{modules:?}");
    assert_eq!(
        common::as_str(common::field(&modules[0], "name")),
        "consistency"
    );
    assert_eq!(
        common::as_str(common::field(&modules[0], "path")),
        so_path.to_str().unwrap()
    );
    let status = common::call_ok(&mut c, &["CONSISTENCY.STATUS"]);
    assert_eq!(common::as_str(common::field(&status, "version")), version);
    assert_eq!(
        common::as_i64(common::field(&status, "rules")),
        5,
        "the example rules load: {status:?}"
    );
    let rules = common::call_ok(&mut c, &["CONSISTENCY.RULES"]);
    let names: Vec<&str> = common::as_array(&rules)
        .iter()
        .map(|r| common::as_str(common::field(r, "name")))
        .collect();
    assert_eq!(
        names,
        [
            "cost_weekly",
            "cost_monthly",
            "cost_5h",
            "cost_daily",
            "mcp_connection"
        ]
    );
    // The seed 004 example (JSON caches) loads too.
    let seed004 = root.join(DOC).join("examples/rules.seed004.example.json");
    common::call_ok(
        &mut c,
        &[
            "CONFIG",
            "SET",
            "consistency.rules-file",
            seed004.to_str().unwrap(),
        ],
    );
    let status = common::call_ok(&mut c, &["CONSISTENCY.STATUS"]);
    assert_eq!(
        common::as_i64(common::field(&status, "rules")),
        6,
        "{status:?}"
    );
    assert!(
        redis.log().contains("Module 'consistency' loaded"),
        "{}",
        redis.log()
    );
}
