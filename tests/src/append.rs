//! Peer-style append runs: writer processes in several directories (nfs-sim
//! mounts of one backing directory) append numbered messages to one mbox
//! with [`MailboxLock::append`], each message under its own lock. The
//! check reads the mbox as the server has it and wants every message whose
//! append returned `Ok` there exactly once and whole, nothing torn, nothing
//! that was not delivered, and no two holds overlapping.
//!
//! Each writer logs to a local file (never through the file system under
//! test), one `O_APPEND` write per line:
//!
//! ```text
//! S <ns> <n>   locks held for message n (CLOCK_MONOTONIC)
//! D <n>        append of message n returned Ok
//! E <ns> <n>   hold ends (logged before the release)
//! F <errno>    fcntl locks refused: the dotlock alone
//! X <text>     an error; the message is tried again
//! ```

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spoollock::{Event, LockOptions, MailboxLock, MailboxOptions};

use crate::monotonic_ns;

/// The environment variable that turns a test binary into a writer.
pub const WORKER_ENV: &str = "SPOOLLOCK_APPEND_WORKER";
const MAILBOX: &str = "mbox";
/// How long a run may take before its writers are killed.
const WATCHDOG: Duration = Duration::from_secs(10 * 60);

/// One append run.
#[derive(Debug, Clone)]
pub struct AppendRun {
    pub name: String,
    /// The directory as the server sees it: the mailbox is created and
    /// finally read there.
    pub server_dir: PathBuf,
    /// Where writers run (one nfs-sim mount each); writers are spread
    /// round-robin over them.
    pub places: Vec<PathBuf>,
    pub writers: usize,
    /// Messages each writer appends.
    pub messages: usize,
    /// Take the dotlock (`MailboxOptions::dotlock`); the fcntl lock is
    /// always asked for.
    pub dotlock: bool,
    /// Local directory for the writers' logs.
    pub log_dir: PathBuf,
    /// The command that runs one writer (the test binary, filtered to its
    /// writer test); [`WORKER_ENV`] is added.
    pub worker: (PathBuf, Vec<String>),
}

/// What a run showed.
#[derive(Debug, Clone, Default)]
pub struct AppendReport {
    pub name: String,
    /// Appends that returned `Ok`.
    pub delivered: usize,
    /// Whole messages found in the mailbox.
    pub found: usize,
    /// Delivered, but not in the mailbox.
    pub lost: usize,
    /// Extra copies of messages.
    pub duplicated: usize,
    /// Entries that are not a whole message (overwritten, interleaved,
    /// cut), and bytes before the first entry.
    pub torn: usize,
    /// Whole messages whose append did not return `Ok`.
    pub undelivered_found: usize,
    /// Holds that began before an earlier one had ended.
    pub overlaps: usize,
    /// Lock acquisitions told that fcntl locks are refused.
    pub no_record_locks: usize,
    pub errors: usize,
    pub error_samples: Vec<String>,
    pub mailbox_bytes: u64,
    pub seconds: f64,
}

impl AppendReport {
    /// Everything that shows the lock did not protect the mailbox.
    pub fn violations(&self) -> usize {
        self.lost + self.duplicated + self.torn + self.undelivered_found + self.overlaps
    }

    /// A one-line summary for the test output and the issue.
    pub fn line(&self) -> String {
        format!(
            "{}: delivered={} found={} lost={} dup={} torn={} undelivered_found={} \
             overlaps={} no_record_locks={} errors={} mailbox={}B time={:.1}s",
            self.name,
            self.delivered,
            self.found,
            self.lost,
            self.duplicated,
            self.torn,
            self.undelivered_found,
            self.overlaps,
            self.no_record_locks,
            self.errors,
            self.mailbox_bytes,
            self.seconds,
        )
    }

    /// Panic unless every message arrived exactly once and whole, with no
    /// error and no overlapping hold.
    pub fn assert_sound(&self, expected: usize) {
        assert_eq!(self.violations(), 0, "{}", self.line());
        assert_eq!(self.errors, 0, "{}", self.line());
        assert_eq!(self.delivered, expected, "{}", self.line());
        assert_eq!(self.found, expected, "{}", self.line());
    }
}

/// Message `n` of writer `w`: a subject naming it and a body whose length
/// depends on both, so that one written over another leaves a torn tail.
pub fn message(w: usize, n: usize) -> Vec<u8> {
    let mut m = format!("Subject: w{w} m{n}\nX-Spoollock-Test: append\n\n");
    let lines = 3 + (w * 7 + n * 13) % 40;
    for i in 0..lines {
        m.push_str(&format!("w{w} m{n} line {i}: the quick brown fox jumps\n"));
    }
    m.into_bytes()
}

fn sender(w: usize) -> String {
    format!("writer{w}@example.org")
}

/// The spec a writer gets in [`WORKER_ENV`]: `log|mailbox|writer|messages|dotlock`.
fn encode(log: &Path, mailbox: &Path, w: usize, messages: usize, dotlock: bool) -> String {
    format!(
        "{}|{}|{w}|{messages}|{}",
        log.display(),
        mailbox.display(),
        u8::from(dotlock)
    )
}

fn log_line(log: &Mutex<File>, line: &str) {
    let mut f = log.lock().unwrap_or_else(|e| e.into_inner());
    f.write_all(format!("{line}\n").as_bytes()).unwrap();
}

/// Entry point of a writer process (call it from a test that returns at
/// once unless [`WORKER_ENV`] is set).
pub fn worker_main(spec: &str) {
    let f: Vec<&str> = spec.split('|').collect();
    assert_eq!(f.len(), 5, "bad writer spec {spec}");
    let log = Arc::new(Mutex::new(
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(f[0])
            .unwrap(),
    ));
    let mailbox = PathBuf::from(f[1]);
    let w: usize = f[2].parse().unwrap();
    let messages: usize = f[3].parse().unwrap();
    let observer_log = log.clone();
    let opts = MailboxOptions {
        lock: LockOptions {
            observer: Some(Arc::new(move |event: &Event| {
                if let Event::NoRecordLocks(errno) = event {
                    log_line(&observer_log, &format!("F {errno:?}"));
                }
            })),
            ..LockOptions::default()
        },
        dotlock: f[4] == "1",
        fcntl: true,
        ..MailboxOptions::default()
    };
    for n in 0..messages {
        loop {
            let mut locked = match MailboxLock::open(&mailbox, &opts) {
                Ok(locked) => locked,
                Err(e) => {
                    log_line(&log, &format!("X open: {e}"));
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            log_line(&log, &format!("S {} {n}", monotonic_ns()));
            let appended = locked.append(&message(w, n), &sender(w));
            if appended.is_ok() {
                log_line(&log, &format!("D {n}"));
            }
            log_line(&log, &format!("E {} {n}", monotonic_ns()));
            if let Err(e) = locked.release() {
                log_line(&log, &format!("X release: {e}"));
            }
            match appended {
                Ok(()) => break,
                Err(e) => log_line(&log, &format!("X append: {e}")),
            }
        }
    }
}

/// Run `run` to the end and report what the mailbox holds.
pub fn run(run: &AppendRun) -> AppendReport {
    let started = Instant::now();
    fs::create_dir_all(&run.log_dir).unwrap();
    File::create(run.server_dir.join(MAILBOX)).unwrap();
    let mut children: Vec<(usize, Child, PathBuf)> = Vec::new();
    for w in 0..run.writers {
        let log = run.log_dir.join(format!("{}.w{w}.log", run.name));
        let _ = fs::remove_file(&log);
        let mailbox = run.places[w % run.places.len()].join(MAILBOX);
        let child = Command::new(&run.worker.0)
            .args(&run.worker.1)
            .env(
                WORKER_ENV,
                encode(&log, &mailbox, w, run.messages, run.dotlock),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn writer");
        children.push((w, child, log));
    }
    for (w, child, _) in &mut children {
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > WATCHDOG {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{}: writer {w} still running after {WATCHDOG:?}", run.name);
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        if !status.success() {
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut stderr);
            }
            panic!("{}: writer {w} failed ({status}):\n{stderr}", run.name);
        }
    }
    let mut report = AppendReport {
        name: run.name.clone(),
        ..AppendReport::default()
    };
    let mut delivered: Vec<(usize, usize)> = Vec::new();
    let mut holds: Vec<(u64, u64)> = Vec::new();
    for (w, _, log) in &children {
        read_log(*w, log, &mut report, &mut delivered, &mut holds);
    }
    report.delivered = delivered.len();
    holds.sort_unstable();
    let mut latest_end = 0;
    for (start, end) in holds {
        if start < latest_end {
            report.overlaps += 1;
        }
        latest_end = latest_end.max(end);
    }
    let text = fs::read(run.server_dir.join(MAILBOX)).unwrap();
    report.mailbox_bytes = text.len() as u64;
    check_mailbox(&text, &delivered, &mut report);
    report.seconds = started.elapsed().as_secs_f64();
    report
}

fn read_log(
    w: usize,
    log: &Path,
    report: &mut AppendReport,
    delivered: &mut Vec<(usize, usize)>,
    holds: &mut Vec<(u64, u64)>,
) {
    let text = fs::read_to_string(log).unwrap_or_default();
    let mut starts: HashMap<usize, u64> = HashMap::new();
    for line in text.lines() {
        let mut it = line.split(' ');
        let tag = it.next().unwrap_or("");
        let mut num = || it.next().and_then(|v| v.parse::<u64>().ok());
        match tag {
            "S" => {
                let (t, n) = (num().unwrap(), num().unwrap());
                starts.insert(n as usize, t);
            }
            "E" => {
                let (t, n) = (num().unwrap(), num().unwrap());
                let start = starts
                    .remove(&(n as usize))
                    .expect("hold end without start");
                holds.push((start, t));
            }
            "D" => delivered.push((w, num().unwrap() as usize)),
            "F" => report.no_record_locks += 1,
            "X" => {
                report.errors += 1;
                if report.error_samples.len() < 5 {
                    report.error_samples.push(format!("w{w}: {line}"));
                }
            }
            _ => {}
        }
    }
}

/// Split the mbox into entries (a line starting with `From ` begins one)
/// and match each against the message its subject names.
fn check_mailbox(text: &[u8], delivered: &[(usize, usize)], report: &mut AppendReport) {
    let mut entries: Vec<Vec<u8>> = Vec::new();
    let mut preamble = Vec::new();
    for line in text.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b"From ") {
            entries.push(line.to_vec());
        } else if let Some(entry) = entries.last_mut() {
            entry.extend_from_slice(line);
        } else {
            preamble.extend_from_slice(line);
        }
    }
    if !preamble.is_empty() {
        report.torn += 1;
    }
    let mut seen: HashMap<(usize, usize), usize> = HashMap::new();
    for entry in &entries {
        match whole_message(entry) {
            Some(key) => *seen.entry(key).or_default() += 1,
            None => report.torn += 1,
        }
    }
    report.found = seen.values().sum();
    for key in delivered {
        match seen.get(key).copied().unwrap_or(0) {
            0 => report.lost += 1,
            n => report.duplicated += n - 1,
        }
    }
    report.undelivered_found = seen.keys().filter(|k| !delivered.contains(k)).count();
}

/// `(writer, n)` if `entry` is exactly the entry of message n of that
/// writer: its `From ` line, the message, one blank line.
fn whole_message(entry: &[u8]) -> Option<(usize, usize)> {
    let text = std::str::from_utf8(entry).ok()?;
    let (from, rest) = text.split_once('\n')?;
    let subject = rest.lines().next()?.strip_prefix("Subject: w")?;
    let (w, n) = subject.split_once(" m")?;
    let (w, n): (usize, usize) = (w.parse().ok()?, n.parse().ok()?);
    let expected = String::from_utf8(message(w, n)).ok()? + "\n";
    let sender_ok = from.starts_with(&format!("From {} ", sender(w)));
    (sender_ok && rest == expected).then_some((w, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(w: usize, n: usize) -> Vec<u8> {
        let mut e = format!("From {} Mon Nov 23 10:00:00 2026\n", sender(w)).into_bytes();
        e.extend(message(w, n));
        e.push(b'\n');
        e
    }

    #[test]
    fn the_checker_counts_whole_lost_torn_and_extra_messages() {
        let mut mbox = Vec::new();
        mbox.extend(entry(0, 0));
        mbox.extend(entry(1, 0));
        mbox.extend(entry(1, 0));
        // Message 2 of writer 0 overwritten by the shorter message 1 of
        // writer 1, whose tail is left behind.
        let long = entry(0, 2);
        let short = entry(1, 1);
        assert!(long.len() > short.len());
        mbox.extend(&short);
        mbox.extend(&long[short.len()..]);
        mbox.extend(entry(2, 5));
        let delivered = [(0, 0), (1, 0), (0, 2), (1, 1), (0, 3)];
        let mut report = AppendReport::default();
        check_mailbox(&mbox, &delivered, &mut report);
        assert_eq!(report.found, 4, "{report:?}"); // (0,0) (1,0) (1,0) (2,5)
        assert_eq!(report.duplicated, 1, "{report:?}");
        assert_eq!(report.lost, 3, "{report:?}"); // (0,2) (1,1) (0,3)
        assert_eq!(report.torn, 1, "{report:?}");
        assert_eq!(report.undelivered_found, 1, "{report:?}"); // (2,5)

        let mut clean = Vec::new();
        for (w, n) in [(0, 0), (1, 0)] {
            clean.extend(entry(w, n));
        }
        let mut report = AppendReport::default();
        check_mailbox(&clean, &[(0, 0), (1, 0)], &mut report);
        assert_eq!((report.found, report.violations()), (2, 0), "{report:?}");
    }
}
