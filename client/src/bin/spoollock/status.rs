//! `spoollock status [DIR|MAILBOX...]`: the locks in a spool, for an
//! administrator: who holds each (pid, host, program when it runs here),
//! how old it is, whose file it is, and whether the next locker would break
//! it, and why. Reading a spool needs no privilege: it works as any user on
//! `/var/mail`, and changes nothing (staleness is judged with the file
//! system's clock where a probe file may be written, else with the local
//! clock).

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use spoollock::{Error, LockError, LockState, StaleReason, SPOOL_DIRS};
use spoollock_lockfile::{check, local_host, LockDir, Options, Wait};

/// One lock as `status` reports it.
#[derive(Debug)]
struct Row {
    path: PathBuf,
    state: State,
    pid: Option<u32>,
    host: Option<String>,
    program: Option<String>,
    age: Option<Duration>,
    owner: Option<String>,
}

#[derive(Debug)]
enum State {
    /// Valid: `Some(pid)` when its process is known to live here, else
    /// kept for its age (how long until stale).
    Held(KeptBecause),
    Stale(StaleReason),
    /// Something that is not a lock has the name (directory, symlink,
    /// large file): never broken.
    NotALock,
    /// No lock (a mailbox named that is not locked, or a lock removed
    /// between the listing and the look).
    Free,
    /// Could not be read.
    Unreadable(String),
}

/// Why a valid lock is kept: its process lives here, or it is not old
/// enough to be stale (how long until it is, when its age is known).
#[derive(Debug)]
enum KeptBecause {
    Process(u32),
    Fresh(Option<Duration>),
}

impl State {
    fn word(&self) -> &'static str {
        match self {
            State::Held(_) => "held",
            State::Stale(_) => "stale",
            State::NotALock => "not-a-lock",
            State::Free => "free",
            State::Unreadable(_) => "unreadable",
        }
    }

    /// What the next locker would do, and why.
    fn why(&self) -> String {
        match self {
            State::Held(KeptBecause::Process(pid)) => format!("kept: its process {pid} is alive"),
            State::Held(KeptBecause::Fresh(Some(left))) => {
                format!("kept: stale in {}s unless refreshed", left.as_secs())
            }
            State::Held(KeptBecause::Fresh(None)) => "kept: not old enough to be stale".into(),
            State::Stale(reason) => format!("would be broken: {reason}"),
            State::NotALock => "never broken: not a lock file".into(),
            State::Free => "takes it".into(),
            State::Unreadable(e) => e.clone(),
        }
    }
}

/// Run `spoollock status`; the exit status.
pub fn status(paths: &[PathBuf], json: bool, stale_age: Duration) -> Result<u8, Error> {
    let paths: Vec<PathBuf> = if paths.is_empty() {
        SPOOL_DIRS
            .iter()
            .map(PathBuf::from)
            .filter(|d| d.is_dir())
            .collect()
    } else {
        paths.to_vec()
    };
    let opts = Options {
        wait: Wait::NoWait,
        stale_age,
        ..Options::default()
    };
    let mut rows = Vec::new();
    let mut seen_dirs = Vec::new();
    for path in &paths {
        let (dir, names) = if let Some(meta) = std::fs::metadata(path).ok().filter(|m| m.is_dir()) {
            // Each spool once, however it was named (/var/spool/mail ->
            // /var/mail on Debian).
            let id = (
                std::os::unix::fs::MetadataExt::dev(&meta),
                std::os::unix::fs::MetadataExt::ino(&meta),
            );
            if seen_dirs.contains(&id) {
                continue;
            }
            seen_dirs.push(id);
            let mut names: Vec<OsString> = std::fs::read_dir(path)?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name())
                .filter(|n| n.as_bytes().ends_with(b".lock") && n.as_bytes() != b".lock")
                .collect();
            names.sort();
            (path.clone(), names)
        } else {
            // A mailbox: its lock.
            let target = spoollock::LockTarget::for_file(path)?;
            (target.dir, vec![target.name])
        };
        let lock_dir = LockDir::open(&dir)?;
        for name in names {
            rows.push(row(&lock_dir, &dir, &name, &opts));
        }
    }
    if json {
        println!("{}", to_json(&rows));
    } else {
        print_table(&rows);
    }
    Ok(0)
}

fn row(lock_dir: &LockDir, dir: &Path, name: &OsString, opts: &Options) -> Row {
    let path = dir.join(name);
    let mut row = Row {
        path,
        state: State::Held(KeptBecause::Fresh(None)),
        pid: None,
        host: None,
        program: None,
        age: None,
        owner: None,
    };
    let holder = match check(lock_dir, name, opts) {
        Ok(LockState::Held(holder)) => holder,
        Ok(LockState::Stale(holder, reason)) => {
            row.state = State::Stale(reason);
            holder
        }
        Ok(LockState::Free) => {
            row.state = State::Free;
            return row;
        }
        Err(LockError::NotRegularFile) => {
            row.state = State::NotALock;
            if let Ok(meta) = std::fs::symlink_metadata(&row.path) {
                row.owner = Some(login_of(std::os::unix::fs::MetadataExt::uid(&meta)));
            }
            return row;
        }
        Err(e) => {
            row.state = State::Unreadable(e.to_string());
            return row;
        }
    };
    row.pid = holder.content.pid;
    row.host = holder.content.host.clone();
    // Of this host and this boot (a lock from before a reboot names a pid
    // that may now be another process's): only then does its pid say who
    // keeps it.
    let me = local_host();
    let here = holder.content.host.as_deref() == Some(me.host.as_str())
        && match (&holder.content.boot, &me.boot) {
            (Some(theirs), Some(ours)) => theirs == ours,
            _ => true,
        };
    if let (true, Some(pid)) = (here, holder.content.pid) {
        row.program = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()
            .map(|c| c.trim_end().to_owned());
    }
    row.age = SystemTime::now().duration_since(holder.mtime).ok();
    row.owner = holder.owner.map(login_of);
    if let State::Held(_) = row.state {
        row.state = State::Held(match (row.program.is_some(), row.pid) {
            (true, Some(pid)) => KeptBecause::Process(pid),
            _ => KeptBecause::Fresh(row.age.map(|a| opts.stale_age.saturating_sub(a))),
        });
    }
    row
}

fn login_of(uid: u32) -> String {
    match nix::unistd::User::from_uid(uid.into()) {
        Ok(Some(user)) => user.name,
        _ => uid.to_string(),
    }
}

fn print_table(rows: &[Row]) {
    if rows.is_empty() {
        println!("no locks");
        return;
    }
    let dash = || "-".to_string();
    let lines: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            [
                r.path.display().to_string(),
                r.pid.map_or_else(dash, |p| p.to_string()),
                r.host.clone().unwrap_or_else(dash),
                r.program.clone().unwrap_or_else(dash),
                r.age.map_or_else(dash, |a| format!("{}s", a.as_secs())),
                r.owner.clone().unwrap_or_else(dash),
                r.state.word().to_string(),
                r.state.why(),
            ]
        })
        .collect();
    let head = [
        "LOCK",
        "PID",
        "HOST",
        "PROGRAM",
        "AGE",
        "OWNER",
        "STATE",
        "NEXT LOCKER",
    ];
    let mut width = head.map(str::len);
    for line in &lines {
        for (w, cell) in width.iter_mut().zip(line) {
            *w = (*w).max(cell.len());
        }
    }
    let print = |cells: &[String]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(width).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    print(&head.map(String::from));
    for line in &lines {
        print(line);
    }
}

/// A JSON array of objects, one per lock (no dependency for it: the
/// values are strings, numbers and null).
fn to_json(rows: &[Row]) -> String {
    let s = |v: &str| json_string(v);
    let opt_s = |v: &Option<String>| v.as_deref().map_or("null".into(), json_string);
    let opt_n = |v: Option<u64>| v.map_or("null".into(), |n| n.to_string());
    let objects: Vec<String> = rows
        .iter()
        .map(|r| {
            let reason = match &r.state {
                State::Stale(reason) => s(&reason.to_string()),
                _ => "null".into(),
            };
            format!(
                "{{\"lock\":{},\"state\":{},\"would_break\":{},\"reason\":{},\"pid\":{},\
                 \"host\":{},\"program\":{},\"age_secs\":{},\"owner\":{},\"next_locker\":{}}}",
                s(&r.path.to_string_lossy()),
                s(r.state.word()),
                matches!(r.state, State::Stale(_)),
                reason,
                opt_n(r.pid.map(u64::from)),
                opt_s(&r.host),
                opt_s(&r.program),
                opt_n(r.age.map(|a| a.as_secs())),
                opt_s(&r.owner),
                s(&r.state.why()),
            )
        })
        .collect();
    format!("[{}]", objects.join(","))
}

fn json_string(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
