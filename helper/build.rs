//! Link the unwinder statically (`libgcc_eh.a`, as `gcc -static-libgcc`
//! does) so that the setgid helper does not load `libgcc_s.so.1`: libc is
//! then the only shared library mapped, relocated and initialized before
//! `main` with the mail group in the effective gid, and each start of the
//! helper saves that library's loading, its symbol relocations and its
//! constructor (a run of `cpuid` instructions, each a trap to the
//! hypervisor in a virtual machine): about 0.1 ms of the ~1.5 ms a
//! spawn + lock + release + exit takes there.
//!
//! Only for a native glibc build with the default (dynamic) C runtime; if
//! the C compiler does not name a `libgcc_eh.a`, nothing changes and the
//! helper links `libgcc_s` as any Rust program does.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CC");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let native = var("TARGET") == var("HOST");
    let static_crt = var("CARGO_CFG_TARGET_FEATURE")
        .split(',')
        .any(|f| f == "crt-static");
    if !native
        || var("CARGO_CFG_TARGET_OS") != "linux"
        || var("CARGO_CFG_TARGET_ENV") != "gnu"
        || static_crt
    {
        return;
    }
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let Ok(out) = Command::new(cc)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
    else {
        return;
    };
    let found = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let path = Path::new(&found);
    let Some(dir) = path.parent() else {
        return;
    };
    if !out.status.success() || !path.is_absolute() || !path.is_file() {
        return;
    }
    // The compiler driver searches this directory anyway; named here
    // because rustc links with `-nodefaultlibs`.
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rustc-link-lib=static=gcc_eh");
}
