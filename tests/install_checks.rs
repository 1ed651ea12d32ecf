//! The "is it there?" tests of scripts/lib.sh look for the exact files that will
//! be used. bindgen (building redis-module) loads libclang through clang-sys, which
//! looks for `libclang.so`, `libclang-<version>.so[.N]` or `libclang.so.N` and
//! never `libclang-cpp`; it also needs clang's builtin headers. A machine with only
//! libclang-cpp (the base image) must be told libclang is missing, so that
//! scripts/test.sh and scripts/demo.sh install libclang-dev.

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
