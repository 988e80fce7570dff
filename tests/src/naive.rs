//! The naive dotlock: `open(O_CREAT|O_EXCL)` and trust its return code;
//! a lock older than the stale age *by the local clock* (and by whatever
//! `stat` says, cached or not) is removed with a plain `unlink`.
//! Correct enough on one local disk with one clock; not on NFS.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A naive lock held on `path`.
#[derive(Debug)]
pub struct NaiveLock {
    path: PathBuf,
}

/// What a naive acquisition did on its way.
#[derive(Debug, Default, Clone, Copy)]
pub struct NaiveStats {
    /// Locks it judged stale by the local clock and removed.
    pub broke: u64,
}

impl NaiveLock {
    /// Take `dir/name`, waiting (1 ms steps) as long as it takes.
    pub fn acquire(
        dir: &Path,
        name: &str,
        stale_age: Duration,
        stats: &mut NaiveStats,
    ) -> NaiveLock {
        let path = dir.join(name);
        loop {
            let created = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&path);
            match created {
                Ok(mut f) => {
                    let _ = writeln!(f, "{}", std::process::id());
                    return NaiveLock { path };
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    if let Ok(meta) = fs::metadata(&path) {
                        let age = meta
                            .modified()
                            .ok()
                            .and_then(|m| SystemTime::now().duration_since(m).ok());
                        if age.is_some_and(|age| age > stale_age) {
                            if fs::remove_file(&path).is_ok() {
                                stats.broke += 1;
                            }
                            continue;
                        }
                    }
                }
                Err(_) => {}
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Refresh the lock's mtime (the naive keep-alive).
    pub fn touch(&self) {
        if let Ok(f) = OpenOptions::new().write(true).open(&self.path) {
            let _ = f.set_modified(SystemTime::now());
        }
    }

    /// Remove the lock by name.
    pub fn release(self) {
        let _ = fs::remove_file(&self.path);
    }
}
