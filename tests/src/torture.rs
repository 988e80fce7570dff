//! The torture harness: worker processes x lock cycles on one lock, with
//! holders killed at random, checked afterwards from what every process
//! logged.
//!
//! Each worker incarnation logs to a local file (never through the file
//! system under test) with `O_APPEND` writes that survive its SIGKILL:
//!
//! ```text
//! S <ns> <seq> <ino>  lock acquired (CLOCK_MONOTONIC), the lock's inode
//! E <ns> <seq>   hold ends (logged before the release call)
//! K <ns>         about to SIGKILL itself while holding
//! R <ns>         (parent) reaped after a SIGKILL; an upper bound of death
//! B <reason> <ns> pid= host= mtime=   broke a stale lock (dead, reused,
//!                age, naive) and what it said
//! N <ns> <seq>   release found the lock no longer ours
//! F <errno>      the file system refused fcntl locks: the dotlock alone
//!                (mailbox locks only)
//! X <text>       an error, retried
//! D              finished all its cycles
//! ```
//!
//! While holding, a worker opens the shared data file (close-to-open),
//! reads its size, pauses, and writes `<incarnation> <seq>\n` at that
//! offset: two holders at once lose or duplicate records. With the
//! mailbox lock kinds the data file is the locked mailbox and the worker
//! reads its size and writes through the locked descriptor, as an MDA does.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use spoollock::{LockOptions, MailboxLock, MailboxOptions};
use spoollock_lockfile::{acquire, Event, LockDir, LockError, Options, StaleReason, Wait};

use crate::monotonic_ns;
use crate::naive::{NaiveLock, NaiveStats};

/// The environment variable that turns a test binary into a worker.
pub const WORKER_ENV: &str = "SPOOLLOCK_TORTURE_WORKER";
const LOCK: &str = "data.lock";
const DATA: &str = "data";

/// Which lock the workers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// spoollock's dotlock on `data.lock` (spoollock-lockfile).
    Spoollock,
    /// The naive O_EXCL lock ([`crate::naive`]).
    Naive,
    /// [`spoollock::MailboxLock`] on the data file: the dotlock and an fcntl
    /// lock (the dotlock alone where the file system refuses fcntl locks).
    Mailbox,
    /// [`spoollock::MailboxLock`] with the dotlock switched off: the fcntl
    /// lock alone.
    FcntlOnly,
}

impl LockKind {
    fn name(self) -> &'static str {
        match self {
            LockKind::Spoollock => "spoollock",
            LockKind::Naive => "naive",
            LockKind::Mailbox => "mailbox",
            LockKind::FcntlOnly => "fcntl-only",
        }
    }

    fn from_name(name: &str) -> LockKind {
        [
            LockKind::Spoollock,
            LockKind::Naive,
            LockKind::Mailbox,
            LockKind::FcntlOnly,
        ]
        .into_iter()
        .find(|k| k.name() == name)
        .unwrap_or_else(|| panic!("unknown lock kind {name}"))
    }
}

/// Where a worker runs: the directory it locks in (a local directory or
/// one nfs-sim mount) and the host name it pretends to have (its own UTS
/// namespace), so that locks from other "clients" can only be judged by
/// their age.
#[derive(Debug, Clone)]
pub struct Place {
    pub dir: PathBuf,
    pub host: Option<String>,
}

/// One torture run.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    /// The directory as the server sees it (the backing directory of the
    /// mounts, or the local directory): setup and final checks use it.
    pub server_dir: PathBuf,
    pub places: Vec<Place>,
    /// Worker slots, spread round-robin over `places`.
    pub workers: usize,
    /// Completed cycles each slot must reach (a killed worker is replaced
    /// by one that goes on).
    pub cycles: usize,
    pub lock: LockKind,
    /// Every worker process is a host of its own (its place's host name
    /// plus its incarnation): a killed holder's lock can then only be
    /// judged by its age, as between NFS clients.
    pub host_per_process: bool,
    pub stale_age: Duration,
    /// `None`: each acquisition waits as long as it takes (`Wait::Forever`).
    /// `Some(d)`: it gives up after `d` and calls `acquire` again, so no
    /// lock is made from a temporary file older than `d` (the workaround
    /// for finding F1, tests/born_stale.rs, before the library refreshed
    /// its temporary file before linking).
    pub wait_slice: Option<Duration>,
    /// Probability that a holder SIGKILLs itself while holding.
    pub self_kill: f64,
    /// SIGKILLs the parent sends to random workers, per second.
    pub random_kills_per_sec: f64,
    /// Longest pause inside a hold, between reading the size and writing.
    pub max_pause: Duration,
    /// Local directory for the logs.
    pub log_dir: PathBuf,
    /// The command that runs one worker (the test binary, filtered to its
    /// worker test); [`WORKER_ENV`] is added.
    pub worker: (PathBuf, Vec<String>),
    pub seed: u64,
}

/// What a run showed.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub name: String,
    pub lock: Option<LockKind>,
    pub cycles: usize,
    pub holds: usize,
    /// Holds that began before an earlier hold had ended.
    pub violations: usize,
    pub lost_records: usize,
    pub duplicated_records: usize,
    pub unexpected_records: usize,
    pub self_kills: usize,
    pub random_kills: usize,
    pub broke_dead: usize,
    pub broke_reused: usize,
    pub broke_age: usize,
    pub naive_broke: usize,
    pub lost_while_held: usize,
    /// Worker incarnations told that fcntl locks are refused (`ENOLCK`),
    /// which went on with the dotlock alone.
    pub no_record_locks: usize,
    pub errors: usize,
    /// Of `errors`, those that were ESTALE (finding F2, fixed: the library
    /// reported a lock deleted by another client between lookup and open
    /// as an I/O error instead of looking again).
    pub estale_errors: usize,
    pub error_samples: Vec<String>,
    pub leftover_temp_files: usize,
    pub leftover_samples: Vec<String>,
    /// The first overlapping holds: (incarnation, seq, start, end) pairs.
    pub overlaps: Vec<String>,
    pub lock_left: bool,
    pub seconds: f64,
}

impl Report {
    /// Stale locks recovered, by any reason.
    pub fn recovered(&self) -> usize {
        self.broke_dead + self.broke_reused + self.broke_age + self.naive_broke
    }

    /// A one-line summary for the test output and the issue.
    pub fn line(&self) -> String {
        format!(
            "{}: lock={:?} cycles={} holds={} violations={} lost={} dup={} unexpected={} \
             kills(self={} random={}) recovered={} (dead={} reused={} age={} naive={}) \
             lost_while_held={} no_record_locks={} errors={} (estale={}) leftover_temp={} \
             lock_left={} time={:.1}s",
            self.name,
            self.lock.unwrap_or(LockKind::Spoollock),
            self.cycles,
            self.holds,
            self.violations,
            self.lost_records,
            self.duplicated_records,
            self.unexpected_records,
            self.self_kills,
            self.random_kills,
            self.recovered(),
            self.broke_dead,
            self.broke_reused,
            self.broke_age,
            self.naive_broke,
            self.lost_while_held,
            self.no_record_locks,
            self.errors,
            self.estale_errors,
            self.leftover_temp_files,
            self.lock_left,
            self.seconds,
        )
    }

    /// Panic unless the run kept mutual exclusion and every record.
    pub fn assert_sound(&self) {
        assert_eq!(self.violations, 0, "overlapping holds: {}", self.line());
        assert_eq!(self.lost_records, 0, "lost records: {}", self.line());
        assert_eq!(self.duplicated_records, 0, "dup records: {}", self.line());
        assert_eq!(self.unexpected_records, 0, "bad records: {}", self.line());
        assert_eq!(self.lost_while_held, 0, "lock lost: {}", self.line());
        assert!(!self.lock_left, "lock left behind: {}", self.line());
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The spec a worker gets in [`WORKER_ENV`].
#[derive(Debug, Clone)]
struct Spec {
    log: PathBuf,
    dir: PathBuf,
    lock: LockKind,
    stale_ms: u64,
    cycles: usize,
    host: String,
    self_kill: f64,
    max_pause_us: u64,
    incarnation: u64,
    seed: u64,
    wait_slice_ms: u64,
}

impl Spec {
    fn encode(&self) -> String {
        format!(
            "{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}",
            self.log.display(),
            self.dir.display(),
            self.lock.name(),
            self.stale_ms,
            self.cycles,
            self.host,
            self.self_kill,
            self.max_pause_us,
            self.incarnation,
            self.seed,
            self.wait_slice_ms,
        )
    }

    fn decode(s: &str) -> Spec {
        let f: Vec<&str> = s.split('|').collect();
        assert_eq!(f.len(), 11, "bad worker spec {s}");
        Spec {
            log: f[0].into(),
            dir: f[1].into(),
            lock: LockKind::from_name(f[2]),
            stale_ms: f[3].parse().unwrap(),
            cycles: f[4].parse().unwrap(),
            host: f[5].into(),
            self_kill: f[6].parse().unwrap(),
            max_pause_us: f[7].parse().unwrap(),
            incarnation: f[8].parse().unwrap(),
            seed: f[9].parse().unwrap(),
            wait_slice_ms: f[10].parse().unwrap(),
        }
    }
}

fn log_line(log: &Mutex<File>, line: &str) {
    let mut f = log.lock().unwrap_or_else(|e| e.into_inner());
    // One write(2) per line: O_APPEND keeps lines whole across a SIGKILL.
    f.write_all(format!("{line}\n").as_bytes()).unwrap();
}

/// Pretend to be another NFS client: a UTS namespace with its own host
/// name, for this thread (the one that locks).
fn become_host(host: &str) {
    if host.is_empty() {
        return;
    }
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUTS).expect("unshare(CLONE_NEWUTS)");
    nix::unistd::sethostname(host).expect("sethostname");
}

/// Entry point of a worker process (call it from a test that returns at
/// once unless [`WORKER_ENV`] is set).
pub fn worker_main(spec: &str) {
    let spec = Spec::decode(spec);
    become_host(&spec.host);
    let log = Arc::new(Mutex::new(
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log)
            .unwrap(),
    ));
    let mut rng = Rng(spec.seed | 1);
    let stale_age = Duration::from_millis(spec.stale_ms);
    let lock_dir = LockDir::open(&spec.dir).unwrap();
    let observer_log = log.clone();
    let mut opts = Options {
        wait: Wait::Forever,
        stale_age,
        observer: Some(Arc::new(move |event: &Event| {
            if let Event::NoRecordLocks(errno) = event {
                log_line(&observer_log, &format!("F {errno:?}"));
            }
            if let Event::BrokeStale(holder, reason) = event {
                let tag = match reason {
                    StaleReason::DeadProcess => "dead",
                    StaleReason::PidReused => "reused",
                    StaleReason::Age => "age",
                };
                let mtime = holder
                    .mtime
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0);
                log_line(
                    &observer_log,
                    &format!(
                        "B {tag} {} pid={:?} host={:?} mtime={mtime:.3}",
                        monotonic_ns(),
                        holder.content.pid,
                        holder.content.host
                    ),
                );
            }
        })),
        ..Options::default()
    };
    let data_path = spec.dir.join(DATA);
    let mut mailbox_opts = MailboxOptions {
        lock: LockOptions {
            wait: Wait::Forever,
            stale_age,
            keep_alive: Some(stale_age / 4),
            observer: opts.observer.clone(),
            ..LockOptions::default()
        },
        dotlock: spec.lock == LockKind::Mailbox,
        fcntl: true,
        ..MailboxOptions::default()
    };
    let mut naive_stats = NaiveStats::default();
    for seq in 0..spec.cycles {
        enum Held {
            Spool(spoollock_lockfile::Dotlock),
            Naive(NaiveLock),
            Mailbox(MailboxLock),
        }
        let held = match spec.lock {
            LockKind::Spoollock => loop {
                if spec.wait_slice_ms > 0 {
                    opts.wait = Wait::timeout(Duration::from_millis(spec.wait_slice_ms));
                }
                match acquire(&lock_dir, LOCK.as_ref(), &opts) {
                    Ok(lock) => break Held::Spool(lock),
                    Err(LockError::Timeout { .. }) if spec.wait_slice_ms > 0 => {}
                    Err(e) => {
                        log_line(&log, &format!("X acquire: {e}"));
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            },
            LockKind::Mailbox | LockKind::FcntlOnly => loop {
                if spec.wait_slice_ms > 0 {
                    mailbox_opts.lock.wait =
                        Wait::timeout(Duration::from_millis(spec.wait_slice_ms));
                }
                match MailboxLock::open(&data_path, &mailbox_opts) {
                    Ok(lock) => break Held::Mailbox(lock),
                    Err(e) if spec.wait_slice_ms > 0 && e.is_busy() => {}
                    Err(e) => {
                        log_line(&log, &format!("X acquire: {e}"));
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            },
            LockKind::Naive => {
                let before = naive_stats.broke;
                let lock = NaiveLock::acquire(&spec.dir, LOCK, stale_age, &mut naive_stats);
                for _ in before..naive_stats.broke {
                    log_line(&log, "B naive");
                }
                Held::Naive(lock)
            }
        };
        let ino = match &held {
            Held::Spool(lock) => lock.id().ino,
            Held::Naive(_) | Held::Mailbox(_) => 0,
        };
        log_line(&log, &format!("S {} {seq} {ino}", monotonic_ns()));
        let mut opened: Option<File> = None;
        let data: &File = match &held {
            // The locked descriptor: its size is current once locked (and
            // no second descriptor whose close could drop a POSIX lock).
            Held::Mailbox(lock) => lock.file().expect("the mailbox exists"),
            // Close-to-open: open after locking.
            _ => opened.insert(
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&data_path)
                    .unwrap(),
            ),
        };
        // Write at the size seen.
        let end = data.metadata().unwrap().len();
        let pause = if spec.max_pause_us > 0 {
            rng.next() % spec.max_pause_us
        } else {
            0
        };
        if pause > 0 {
            std::thread::sleep(Duration::from_micros(pause));
        } else {
            std::thread::yield_now();
        }
        data.write_all_at(format!("{} {seq}\n", spec.incarnation).as_bytes(), end)
            .unwrap();
        drop(opened);
        if rng.unit() < spec.self_kill {
            log_line(&log, &format!("K {}", monotonic_ns()));
            kill(Pid::this(), Signal::SIGKILL).unwrap();
        }
        log_line(&log, &format!("E {} {seq}", monotonic_ns()));
        match held {
            Held::Spool(lock) => match lock.release() {
                Ok(()) => {}
                Err(LockError::NotOurs) => log_line(&log, &format!("N {} {seq}", monotonic_ns())),
                Err(e) => log_line(&log, &format!("X release: {e}")),
            },
            Held::Naive(lock) => lock.release(),
            Held::Mailbox(lock) => match lock.release() {
                Ok(()) => {}
                Err(spoollock::Error::Lock(LockError::NotOurs)) => {
                    log_line(&log, &format!("N {} {seq}", monotonic_ns()))
                }
                Err(e) => log_line(&log, &format!("X release: {e}")),
            },
        }
    }
    log_line(&log, "D");
}

struct Slot {
    place: usize,
    completed: usize,
    generation: u64,
    child: Option<(Child, u64, PathBuf)>,
    done: bool,
}

#[derive(Default)]
struct Parsed {
    starts: HashMap<usize, u64>,
    ends: HashMap<usize, u64>,
    kill_at: Option<u64>,
    reaped_at: Option<u64>,
    done: bool,
}

fn parse_log(path: &Path, report: &mut Report) -> Parsed {
    let text = fs::read_to_string(path).unwrap_or_default();
    let mut p = Parsed::default();
    for line in text.lines() {
        let mut it = line.split(' ');
        let tag = it.next().unwrap_or("");
        let mut num = || it.next().and_then(|v| v.parse::<u64>().ok());
        match tag {
            "S" => {
                let (t, seq) = (num().unwrap(), num().unwrap());
                p.starts.insert(seq as usize, t);
            }
            "E" => {
                let (t, seq) = (num().unwrap(), num().unwrap());
                p.ends.insert(seq as usize, t);
            }
            "K" => p.kill_at = num(),
            "R" => p.reaped_at = num(),
            "B" => match it.next().unwrap_or("") {
                "dead" => report.broke_dead += 1,
                "reused" => report.broke_reused += 1,
                "age" => report.broke_age += 1,
                _ => report.naive_broke += 1,
            },
            "N" => report.lost_while_held += 1,
            "F" => report.no_record_locks += 1,
            "X" => {
                report.errors += 1;
                if line.contains("Stale file handle") {
                    report.estale_errors += 1;
                }
                if report.error_samples.len() < 5 {
                    report.error_samples.push(line.to_string());
                }
            }
            "D" => p.done = true,
            _ => {}
        }
    }
    p
}

fn completed_in(path: &Path) -> usize {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("E "))
        .count()
}

/// Run `scenario` to the end and report what happened.
pub fn run(scenario: &Scenario) -> Report {
    let started = Instant::now();
    let data_path = scenario.server_dir.join(DATA);
    File::create(&data_path).unwrap();
    let _ = fs::remove_file(scenario.server_dir.join(LOCK));
    let mut rng = Rng(scenario.seed | 1);
    let mut report = Report {
        name: scenario.name.clone(),
        lock: Some(scenario.lock),
        ..Report::default()
    };
    let mut slots: Vec<Slot> = (0..scenario.workers)
        .map(|i| Slot {
            place: i % scenario.places.len(),
            completed: 0,
            generation: 0,
            child: None,
            done: false,
        })
        .collect();
    let mut incarnations: Vec<(u64, PathBuf)> = Vec::new();

    let spawn = |slot_id: usize, slot: &mut Slot, rng: &mut Rng| -> (Child, u64, PathBuf) {
        let incarnation = slot_id as u64 * 10_000 + slot.generation;
        slot.generation += 1;
        let log = scenario
            .log_dir
            .join(format!("{}.{incarnation}.log", scenario.name));
        let place = &scenario.places[slot.place];
        let spec = Spec {
            log: log.clone(),
            dir: place.dir.clone(),
            lock: scenario.lock,
            stale_ms: scenario.stale_age.as_millis() as u64,
            cycles: scenario.cycles - slot.completed,
            host: match (&place.host, scenario.host_per_process) {
                (Some(h), true) => format!("{h}-{incarnation}"),
                (Some(h), false) => h.clone(),
                (None, _) => String::new(),
            },
            self_kill: scenario.self_kill,
            max_pause_us: scenario.max_pause.as_micros() as u64,
            incarnation,
            seed: rng.next(),
            wait_slice_ms: scenario
                .wait_slice
                .map_or(0, |d| d.as_millis().max(1) as u64),
        };
        let child = Command::new(&scenario.worker.0)
            .args(&scenario.worker.1)
            .env(WORKER_ENV, spec.encode())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn worker");
        (child, incarnation, log)
    };

    for (i, slot) in slots.iter_mut().enumerate() {
        let (child, inc, log) = spawn(i, slot, &mut rng);
        incarnations.push((inc, log.clone()));
        slot.child = Some((child, inc, log));
    }

    let tick = Duration::from_millis(5);
    let kill_p = scenario.random_kills_per_sec * tick.as_secs_f64();
    let watchdog = Duration::from_secs(30 * 60);
    loop {
        for (i, slot) in slots.iter_mut().enumerate() {
            if slot.done {
                continue;
            }
            let t0 = monotonic_ns();
            let Some((child, _, log)) = slot.child.as_mut() else {
                continue;
            };
            let Some(status) = child.try_wait().unwrap() else {
                continue;
            };
            let log = log.clone();
            slot.completed += completed_in(&log);
            if status.signal() == Some(Signal::SIGKILL as i32) {
                // A worker killed before it made its log still gets its record.
                let mut f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap();
                f.write_all(format!("R {t0}\n").as_bytes()).unwrap();
                if slot.completed >= scenario.cycles {
                    slot.done = true;
                    slot.child = None;
                } else {
                    let (child, inc, log) = spawn(i, slot, &mut rng);
                    incarnations.push((inc, log.clone()));
                    slot.child = Some((child, inc, log));
                }
            } else if status.success() {
                slot.done = true;
                slot.child = None;
            } else {
                let mut stderr = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut stderr);
                }
                panic!("{}: worker {i} failed ({status}):\n{stderr}", scenario.name);
            }
        }
        if slots.iter().all(|s| s.done) {
            break;
        }
        if kill_p > 0.0 && rng.unit() < kill_p {
            let running: Vec<usize> = (0..slots.len())
                .filter(|&i| slots[i].child.is_some())
                .collect();
            if !running.is_empty() {
                let victim = running[(rng.next() % running.len() as u64) as usize];
                if let Some((child, _, _)) = &slots[victim].child {
                    if kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).is_ok() {
                        report.random_kills += 1;
                    }
                }
            }
        }
        if started.elapsed() > watchdog {
            for slot in &mut slots {
                if let Some((child, _, _)) = slot.child.as_mut() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
            panic!("{}: hung for 30 minutes", scenario.name);
        }
        std::thread::sleep(tick);
    }

    analyse(scenario, &incarnations, &data_path, &mut report);
    report.seconds = started.elapsed().as_secs_f64();
    report
}

fn analyse(scenario: &Scenario, incarnations: &[(u64, PathBuf)], data: &Path, report: &mut Report) {
    let mut intervals: Vec<(u64, u64, u64, usize)> = Vec::new();
    let mut expected: HashMap<(u64, usize), (usize, usize)> = HashMap::new();
    for (inc, log) in incarnations {
        let p = parse_log(log, report);
        if p.kill_at.is_some() {
            report.self_kills += 1;
        }
        let completed = p.ends.len();
        report.cycles += completed;
        for (&seq, &start) in &p.starts {
            let end = match p.ends.get(&seq) {
                Some(&e) => e,
                None => p
                    .kill_at
                    .or(p.reaped_at)
                    .unwrap_or_else(|| panic!("{}: hold without end", log.display())),
            };
            intervals.push((start, end, *inc, seq));
        }
        for seq in 0..completed {
            expected.insert((*inc, seq), (1, 1));
        }
        // The hold a SIGKILL interrupted may or may not have written.
        expected.insert((*inc, completed), (0, 1));
        assert!(
            p.done || p.reaped_at.is_some(),
            "{}: worker neither finished nor was killed",
            log.display()
        );
    }
    report.holds = intervals.len();
    intervals.sort();
    let mut latest: (u64, u64, u64, usize) = (0, 0, 0, 0);
    for &(start, end, inc, seq) in &intervals {
        if start < latest.1 {
            report.violations += 1;
            if report.overlaps.len() < 5 {
                report.overlaps.push(format!(
                    "{}/{} [{}, {}] overlaps {}/{} [{}, {}]",
                    latest.2, latest.3, latest.0, latest.1, inc, seq, start, end
                ));
            }
        }
        if end > latest.1 {
            latest = (start, end, inc, seq);
        }
    }
    if report.violations > 0 || report.lost_while_held > 0 {
        // Keep the evidence: the logs outlive the scratch directory.
        let keep = std::env::temp_dir().join(format!(
            "spoollock-torture-evidence-{}-{}",
            scenario.name,
            std::process::id()
        ));
        let _ = fs::create_dir_all(&keep);
        for (_, log) in incarnations {
            if let Some(file) = log.file_name() {
                let _ = fs::copy(log, keep.join(file));
            }
        }
        let _ = fs::copy(data, keep.join("data"));
        report
            .overlaps
            .push(format!("logs kept in {}", keep.display()));
    }

    let text = fs::read(data).unwrap();
    let mut seen: HashMap<(u64, usize), usize> = HashMap::new();
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let parsed = std::str::from_utf8(line).ok().and_then(|l| {
            let (a, b) = l.split_once(' ')?;
            Some((a.parse::<u64>().ok()?, b.parse::<usize>().ok()?))
        });
        match parsed {
            Some(key) => *seen.entry(key).or_default() += 1,
            None => report.unexpected_records += 1,
        }
    }
    for (key, &(min, max)) in &expected {
        let n = seen.get(key).copied().unwrap_or(0);
        if n < min {
            report.lost_records += 1;
        }
        if n > max {
            report.duplicated_records += n - max;
        }
    }
    report.unexpected_records += seen.keys().filter(|k| !expected.contains_key(k)).count();

    let dir = &scenario.server_dir;
    report.lock_left = dir.join(LOCK).exists();
    let leftovers: Vec<String> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    report.leftover_temp_files = leftovers.len();
    report.leftover_samples = leftovers.into_iter().take(5).collect();
}
