//! Uncontended in-process costs of the dotlock algorithm, on tmpfs and on
//! a disk file system: one acquire + release cycle, and `check` on a free
//! and on a held lock.
//!
//! `cargo bench -p spoollock-lockfile --bench lock` (about a minute).
//! Directories: `/dev/shm` (tmpfs) and `/var/tmp` (disk), or the
//! `name=path` pairs in `SPOOLLOCK_BENCH_DIRS` (comma separated), e.g.
//! `SPOOLLOCK_BENCH_DIRS=nfs=/mnt/nfs/tmp`. A directory that cannot be used
//! is skipped with a note.
//!
//! The side-by-side comparison with liblockfile is `bench/compare.sh`.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use spoollock_lockfile::{acquire, check, LockDir, LockState, Options, Wait};

/// A scratch directory inside a base directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(base: &Path) -> std::io::Result<Scratch> {
        let dir = base.join(format!("spoollock-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir)?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn bench_dirs() -> Vec<(String, PathBuf)> {
    match std::env::var("SPOOLLOCK_BENCH_DIRS") {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .filter_map(|pair| {
                let (name, path) = pair.split_once('=')?;
                Some((name.trim().to_string(), PathBuf::from(path.trim())))
            })
            .collect(),
        _ => vec![
            ("tmpfs".to_string(), PathBuf::from("/dev/shm")),
            ("disk".to_string(), PathBuf::from("/var/tmp")),
        ],
    }
}

fn benches(c: &mut Criterion) {
    let no_wait = Options {
        wait: Wait::NoWait,
        ..Options::default()
    };
    let name = std::ffi::OsStr::new("bench.lock");

    for (label, base) in bench_dirs() {
        let scratch = match Scratch::new(&base) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("skipping {label} ({}): {e}", base.display());
                continue;
            }
        };
        let dir = LockDir::open(&scratch.0).expect("open scratch directory");
        let id = format!("{label} {}", base.display());

        let mut group = c.benchmark_group("acquire_release");
        group.bench_function(BenchmarkId::from_parameter(&id), |b| {
            b.iter(|| {
                let lock = acquire(&dir, name, &no_wait).expect("uncontended acquire");
                lock.release().expect("release");
            })
        });
        group.finish();

        let mut group = c.benchmark_group("check");
        group.bench_function(BenchmarkId::new("free", &id), |b| {
            b.iter(|| {
                let state = check(&dir, name, &no_wait).expect("check");
                debug_assert_eq!(state, LockState::Free);
                black_box(state)
            })
        });
        let held = acquire(&dir, name, &no_wait).expect("acquire for check");
        group.bench_function(BenchmarkId::new("held", &id), |b| {
            b.iter(|| {
                let state = check(&dir, name, &no_wait).expect("check");
                debug_assert!(matches!(state, LockState::Held(_)));
                black_box(state)
            })
        });
        held.release().expect("release after check");
        group.finish();
    }
}

criterion_group! {
    name = lock;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = benches
}
criterion_main!(lock);
