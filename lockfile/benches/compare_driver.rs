//! The spoollock side of `bench/compare.sh`: the same loops as
//! `bench/lockfile_driver.c` runs with liblockfile, in-process through
//! spoollock-lockfile. Not a criterion bench (`harness = false`); under
//! `cargo bench` it only runs a short smoke test.
//!
//! ```text
//! compare_driver uncontended DIR N   N x (acquire NAME.lock, release), NoWait
//! compare_driver handoff DIR N       N hand-offs between this process (holder)
//!                                    and a child process (waiter)
//! ```
//!
//! Output is `key=value` lines; times are from CLOCK_MONOTONIC.
//!
//! A hand-off: the holder holds `handoff.lock`, tells the waiter to go, the
//! waiter calls `acquire` (Wait::Forever) and blocks; after a hold of 2 to
//! 20 ms (varied, so the waiter is caught at every stage of its backoff)
//! the holder reads the clock and releases; the waiter reads the clock as
//! soon as `acquire` returns and reports it. Latency = waiter's time minus
//! holder's time, so it includes the cost of `release` itself.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use nix::time::{clock_gettime, ClockId};
use spoollock_lockfile::{acquire, LockDir, Options, Wait};

const UNCONTENDED_NAME: &str = "bench.lock";
const HANDOFF_NAME: &str = "handoff.lock";

/// CLOCK_MONOTONIC in nanoseconds, comparable between processes.
fn mono_ns() -> u64 {
    let ts = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("clock_gettime");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

fn no_wait() -> Options {
    Options {
        wait: Wait::NoWait,
        ..Options::default()
    }
}

/// The directory; with `COMPARE_NAMED=1` in the environment, with named
/// temporary files even where anonymous ones work.
fn open_dir(dir: &str) -> LockDir {
    let opened =
        LockDir::open(Path::new(dir)).unwrap_or_else(|e| die(&format!("cannot open {dir}: {e}")));
    if std::env::var_os("COMPARE_NAMED").is_some_and(|v| v == "1") {
        opened.use_named_temps();
    }
    opened
}

fn die(msg: &str) -> ! {
    eprintln!("compare_driver: {msg}");
    std::process::exit(2)
}

fn uncontended(dir: &str, n: u64) {
    let dir = open_dir(dir);
    let name = OsStr::new(UNCONTENDED_NAME);
    let opts = no_wait();
    let cycle = || {
        let lock = acquire(&dir, name, &opts).unwrap_or_else(|e| die(&format!("acquire: {e}")));
        lock.release()
            .unwrap_or_else(|e| die(&format!("release: {e}")));
    };
    for _ in 0..(n / 10).max(1) {
        cycle(); // warm up caches, the host identity, the dentry
    }
    let start = mono_ns();
    for _ in 0..n {
        cycle();
    }
    let total = mono_ns() - start;
    println!("cycles={n}");
    println!("total_ns={total}");
    println!("ns_per_cycle={:.1}", total as f64 / n as f64);
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn handoff(dir_path: &str, n: usize) {
    let dir = open_dir(dir_path);
    let name = OsStr::new(HANDOFF_NAME);
    let opts = no_wait();
    let exe = std::env::current_exe().unwrap_or_else(|e| die(&format!("current_exe: {e}")));
    let mut child = Command::new(exe)
        .args(["handoff-waiter", dir_path])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| die(&format!("spawn waiter: {e}")));
    let mut to_waiter = child.stdin.take().expect("piped stdin");
    let mut from_waiter = child.stdout.take().expect("piped stdout");

    const WARMUP: usize = 3;
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + WARMUP {
        let lock = acquire(&dir, name, &opts)
            .unwrap_or_else(|e| die(&format!("holder acquire (waiter still holds?): {e}")));
        to_waiter.write_all(b"g").expect("signal waiter");
        std::thread::sleep(Duration::from_millis(2 + (i as u64 * 7) % 19));
        let released = mono_ns();
        lock.release()
            .unwrap_or_else(|e| die(&format!("holder release: {e}")));
        let mut buf = [0u8; 8];
        from_waiter
            .read_exact(&mut buf)
            .unwrap_or_else(|e| die(&format!("waiter died: {e}")));
        let acquired = u64::from_le_bytes(buf);
        if i >= WARMUP {
            samples.push(acquired.saturating_sub(released));
        }
    }
    drop(to_waiter);
    let _ = child.wait();

    samples.sort_unstable();
    let us = |ns: u64| ns as f64 / 1000.0;
    println!("handoffs={n}");
    println!("median_us={:.1}", us(percentile(&samples, 50.0)));
    println!("p90_us={:.1}", us(percentile(&samples, 90.0)));
    println!("min_us={:.1}", us(samples[0]));
    println!("max_us={:.1}", us(samples[samples.len() - 1]));
}

/// The child side of `handoff`: on each byte from stdin, block in acquire,
/// report the monotonic time it returned, release.
fn handoff_waiter(dir: &str) {
    let dir = open_dir(dir);
    let name = OsStr::new(HANDOFF_NAME);
    let opts = Options {
        wait: Wait::Forever,
        ..Options::default()
    };
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    let mut go = [0u8; 1];
    while stdin.read_exact(&mut go).is_ok() {
        let lock = acquire(&dir, name, &opts).unwrap_or_else(|e| die(&format!("waiter: {e}")));
        let acquired = mono_ns();
        lock.release()
            .unwrap_or_else(|e| die(&format!("waiter release: {e}")));
        stdout.write_all(&acquired.to_le_bytes()).expect("report");
        stdout.flush().expect("report");
    }
}

fn parse_n(s: Option<&String>, what: &str) -> u64 {
    s.and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| die(&format!("{what}: expected a positive count")))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("uncontended") if args.len() == 3 => uncontended(&args[1], parse_n(args.get(2), "N")),
        Some("handoff") if args.len() == 3 => handoff(&args[1], parse_n(args.get(2), "N") as usize),
        Some("handoff-waiter") if args.len() == 2 => handoff_waiter(&args[1]),
        // `cargo bench [FILTER]` runs every bench target with `--bench`, and
        // `cargo test --all-targets` with no argument: a short smoke run.
        _ if args.is_empty() || args.iter().any(|a| a == "--bench") => {
            let dir = std::env::temp_dir().join(format!("spoollock-cmp-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("scratch dir");
            let d = dir.to_str().expect("utf-8 temp dir");
            println!(
                "compare_driver smoke run in {d} (the real comparison: bash bench/compare.sh)"
            );
            uncontended(d, 2000);
            handoff(d, 10);
            let _ = std::fs::remove_dir_all(&dir);
        }
        _ => {
            eprintln!(
                "usage: compare_driver uncontended DIR N | handoff DIR N\n\
                 (run by bench/compare.sh; see bench/README.md)"
            );
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}
