//! Figures for the issue (`-- --measure`): not a test, nothing asserted.
//!
//! Both sides run under the same conditions. `dotlockfile` is a copy
//! installed exactly like the helper (`root:mail 2755`, same tmpfs), and the
//! figures are taken by this test binary re-executed as the test user
//! (`--measure-client`), which spawns both the way the spoollock library
//! spawns the helper: `posix_spawn` as the caller, with no uid change in the
//! child. (Root forking with a uid change would add the cost of a full
//! `fork` of this process to every exec, twice per cycle for dotlockfile's
//! two execs.) After a warm-up the contenders alternate round by round, so
//! both see the same machine; medians are reported with p10 and p90. In one
//! session the client is a tight loop: pre-encoded requests, replies read
//! into one buffer and compared with the expected bytes.

use crate::privileged_env::*;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use spoollock_protocol::codec::{encode, PREFIX_LEN};
use spoollock_protocol::{read_frame, write_frame, Hello, Reply, Request, Welcome, MAX_FRAME};

pub(crate) fn install_like_helper(env: &Env, from: &Path, name: &str) -> PathBuf {
    let to = env.base.join("bin").join(name);
    fs::copy(from, &to).unwrap();
    chown(&to, Some(0), Some(env.mail_gid)).unwrap();
    set_mode(&to, 0o2755);
    to
}

pub(crate) fn measure(env: &Env) {
    env.reset();
    let dotlockfile =
        install_like_helper(env, &which("dotlockfile", "liblockfile-bin"), "dotlockfile");
    // The exec floor: a program that does nothing, installed the same way.
    let floor = install_like_helper(env, &which("true", "coreutils"), "true");
    let out = Command::new(&env.tools.setpriv)
        .arg(format!("--reuid={}", env.caller.uid))
        .arg(format!("--regid={}", env.caller.gid))
        .arg("--init-groups")
        .arg("--")
        .arg(std::env::current_exe().unwrap())
        .arg("--measure-client")
        .arg(&env.helper)
        .arg(&dotlockfile)
        .arg(&floor)
        .arg(env.lock_path())
        .env_clear()
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    print!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(out.status.success(), "measuring failed: {:?}", out.status);
    let size = fs::metadata(HELPER_BIN).unwrap().len();
    println!("helper binary ({HELPER_BIN}): {size} bytes");
    // Its shared libraries, when binutils is there to say.
    if let Ok(out) = Command::new("readelf").arg("-d").arg(HELPER_BIN).output() {
        let needed: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("(NEEDED)"))
            .filter_map(|l| {
                l.split('[')
                    .nth(1)
                    .map(|n| n.trim_end_matches(']').to_owned())
            })
            .collect();
        println!("helper shared libraries:        {}", needed.join(", "));
    }
}

/// p10, median and p90.
pub(crate) fn spread(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    (v[v.len() / 10], v[v.len() / 2], v[v.len() * 9 / 10])
}

pub(crate) fn micros(d: Duration) -> String {
    format!("{:.1} us", d.as_secs_f64() * 1e6)
}

pub(crate) fn show(what: &str, v: Vec<Duration>) -> Duration {
    let (p10, med, p90) = spread(v);
    println!(
        "  {what:<56} {:>10}  ({} .. {})",
        micros(med),
        micros(p10),
        micros(p90)
    );
    med
}

/// Read one frame's bytes (prefix and payload) into `buf`.
pub(crate) fn read_raw(from: &mut impl Read, buf: &mut Vec<u8>) {
    let mut prefix = [0u8; PREFIX_LEN];
    from.read_exact(&mut prefix).expect("reply prefix");
    buf.resize(u32::from_be_bytes(prefix) as usize, 0);
    from.read_exact(buf).expect("reply payload");
}

pub(crate) fn run_quiet(cmd: &mut Command) {
    let status = cmd
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{cmd:?}: {status:?}");
}

pub(crate) fn spawn_piped(program: &str) -> (Child, ChildStdin, ChildStdout) {
    let mut child = Command::new(program)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let input = child.stdin.take().unwrap();
    let output = child.stdout.take().unwrap();
    (child, input, output)
}

/// On-CPU time of a process so far (`/proc/PID/schedstat`), if readable.
pub(crate) fn cpu_time(pid: u32) -> Option<Duration> {
    let text = fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
    Some(Duration::from_nanos(text.split(' ').next()?.parse().ok()?))
}

/// `--measure-client HELPER DOTLOCKFILE FLOOR LOCK`, run as the test user.
pub(crate) fn measure_client(args: &[String]) {
    let (helper, dotlockfile, floor, lock) = (&args[0], &args[1], &args[2], &args[3]);
    let (warmup, rounds) = (100, 1000);
    let frames = |requests: &[Request]| -> Vec<u8> {
        let mut out = encode(&Hello::current()).unwrap();
        for r in requests {
            out.extend(encode(r).unwrap());
        }
        out
    };
    let pipelined = frames(&[session_lock(), Request::Bye]);
    let hello_and_lock = frames(&[session_lock()]);
    let mut unlock_and_bye = encode(&Request::Unlock(target())).unwrap();
    unlock_and_bye.extend(encode(&Request::Bye).unwrap());

    // 1. Spawn + lock + release + exit.
    let (mut h, mut d, mut f, mut lib) = (vec![], vec![], vec![], vec![]);
    for round in 0..warmup + rounds {
        // The minimum exchange: hello, lock and bye in one write; the
        // helper answers all four frames and exits (bye releases).
        let t = Instant::now();
        let (mut child, mut input, mut output) = spawn_piped(helper);
        input.write_all(&pipelined).unwrap();
        let _: Welcome = read_frame(&mut output).unwrap();
        assert!(matches!(read_frame(&mut output).unwrap(), Reply::Ready(_)));
        assert!(matches!(read_frame(&mut output).unwrap(), Reply::Locked(_)));
        assert_eq!(read_frame::<_, Reply>(&mut output).unwrap(), Reply::Bye);
        assert!(child.wait().unwrap().success());
        let helper_time = t.elapsed();

        let t = Instant::now();
        run_quiet(Command::new(dotlockfile).arg("-l").arg(lock));
        run_quiet(Command::new(dotlockfile).arg("-u").arg(lock));
        let dotlockfile_time = t.elapsed();

        let t = Instant::now();
        run_quiet(&mut Command::new(floor));
        let floor_time = t.elapsed();

        // As the spoollock library drives it: hello and lock in one write,
        // their answers, then (the lock held) unlock and bye in one write.
        let t = Instant::now();
        let (mut child, mut input, mut output) = spawn_piped(helper);
        input.write_all(&hello_and_lock).unwrap();
        let _: Welcome = read_frame(&mut output).unwrap();
        assert!(matches!(read_frame(&mut output).unwrap(), Reply::Ready(_)));
        assert!(matches!(read_frame(&mut output).unwrap(), Reply::Locked(_)));
        input.write_all(&unlock_and_bye).unwrap();
        assert_eq!(
            read_frame::<_, Reply>(&mut output).unwrap(),
            Reply::Unlocked
        );
        assert_eq!(read_frame::<_, Reply>(&mut output).unwrap(), Reply::Bye);
        drop(input);
        assert!(child.wait().unwrap().success());
        let library_time = t.elapsed();

        if round >= warmup {
            h.push(helper_time);
            d.push(dotlockfile_time);
            f.push(floor_time);
            lib.push(library_time);
        }
    }
    println!("spawn + lock + release + exit, median of {rounds} alternating rounds (p10 .. p90):");
    let helper_med = show("helper: hello, lock, bye in one write", h);
    let dotlockfile_med = show("dotlockfile -l, then dotlockfile -u", d);
    println!(
        "  {:<56} {:>10.2}",
        "ratio helper/dotlockfile",
        helper_med.as_secs_f64() / dotlockfile_med.as_secs_f64()
    );
    show("exec floor: `true` installed the same way", f);
    show("helper as the library drives it (2 round trips)", lib);

    // 2. Repeated lock/release in one session. A session grants at most
    // MAX_GRANTED_PER_SESSION locks, so the cycles run in sessions of
    // that many; starting a session is not timed here (see 1.).
    let in_session = |label: &str| {
        let (cycles, warmup) = (5000, 500);
        let start = || {
            let (child, mut input, mut output) = spawn_piped(helper);
            write_frame(&mut input, &Hello::current()).unwrap();
            let _: Welcome = read_frame(&mut output).unwrap();
            assert!(matches!(read_frame(&mut output).unwrap(), Reply::Ready(_)));
            (child, input, output)
        };
        let (lock, unlock, touch) = (
            encode(&session_lock()).unwrap(),
            encode(&Request::Unlock(target())).unwrap(),
            encode(&Request::Touch(target())).unwrap(),
        );
        let (unlocked, touched) = (
            encode(&Reply::Unlocked).unwrap()[PREFIX_LEN..].to_vec(),
            encode(&Reply::Touched).unwrap()[PREFIX_LEN..].to_vec(),
        );
        let per_session = spoollock_protocol::limits::MAX_GRANTED_PER_SESSION as usize;
        let mut buf = Vec::with_capacity(MAX_FRAME);
        let mut times = Vec::with_capacity(cycles);
        let mut cpu_total = Some(Duration::ZERO);
        let mut done = 0;
        while done < warmup + cycles {
            let (mut child, mut input, mut output) = start();
            let before = cpu_time(child.id());
            let mut timed = 0u32;
            for _ in 0..per_session.min(warmup + cycles - done) {
                let t = Instant::now();
                input.write_all(&lock).unwrap();
                read_raw(&mut output, &mut buf);
                let ok = matches!(
                    spoollock_protocol::codec::decode::<Reply>(&buf),
                    Ok(Reply::Locked(_))
                );
                input.write_all(&unlock).unwrap();
                read_raw(&mut output, &mut buf);
                let elapsed = t.elapsed();
                assert!(ok && buf == unlocked, "unexpected reply");
                if done >= warmup {
                    times.push(elapsed);
                    timed += 1;
                }
                done += 1;
            }
            // Helper CPU per cycle, from the sessions' own counters (the
            // session start is in there too, spread over its cycles).
            cpu_total = match (cpu_total, before, cpu_time(child.id())) {
                (Some(total), Some(a), Some(b)) if timed > 0 => Some(total + (b - a)),
                (total, _, _) if timed == 0 => total,
                _ => None,
            };
            drop(input);
            assert!(child.wait().unwrap().success());
        }
        let cpu = cpu_total.map(|total| total / cycles as u32);

        let (mut child, mut input, mut output) = start();
        input.write_all(&lock).unwrap();
        read_raw(&mut output, &mut buf);
        let mut touches = Vec::with_capacity(cycles);
        for _ in 0..cycles {
            let t = Instant::now();
            input.write_all(&touch).unwrap();
            read_raw(&mut output, &mut buf);
            touches.push(t.elapsed());
            assert_eq!(buf, touched);
        }
        let hwm = fs::read_to_string(format!("/proc/{}/status", child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().to_owned()))
            })
            .unwrap_or_else(|| "?".into());
        drop(input);
        assert!(child.wait().unwrap().success());

        // The platform's floor: a byte to `cat` and back over two pipes.
        let (mut cat, mut to_cat, mut from_cat) = spawn_piped("/bin/cat");
        let mut pings = Vec::with_capacity(cycles);
        let mut byte = [0u8; 1];
        for i in 0..warmup + cycles {
            let t = Instant::now();
            to_cat.write_all(b"x").unwrap();
            from_cat.read_exact(&mut byte).unwrap();
            if i >= warmup {
                pings.push(t.elapsed());
            }
        }
        drop(to_cat);
        cat.wait().unwrap();

        println!("lock + release in one session{label}, median of {cycles} cycles (p10 .. p90):");
        show(
            "lock, then release (two round trips, four audit records)",
            times,
        );
        let cpu = cpu.map_or_else(|| "n/a".into(), micros);
        println!(
            "  {:<56} {cpu:>10}",
            "helper CPU time per cycle (schedstat)"
        );
        show("touch (one round trip, no audit record)", touches);
        show("platform floor: one byte to cat and back", pings);
        hwm
    };
    let hwm = in_session("");
    let mut one_cpu = nix::sched::CpuSet::new();
    one_cpu.set(0).unwrap();
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &one_cpu).unwrap();
    in_session(", client and helper on one CPU");
    println!("helper peak RSS:                {hwm}");
}
