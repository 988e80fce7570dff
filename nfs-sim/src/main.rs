//! `nfs-sim BACKING MOUNTPOINT [options]`: mount one simulated NFS client
//! of BACKING at MOUNTPOINT until SIGINT or SIGTERM, then unmount.
//! Run it twice on one BACKING for two clients of one server.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use nfs_sim::{Fault, LockMode, Mount, SimConfig};
use nix::sys::signal::{SigSet, Signal};

const USAGE: &str = "\
usage: nfs-sim [options] BACKING MOUNTPOINT

Mount a FUSE file system over BACKING that behaves like one NFS client
(attribute and lookup caches, close-to-open, server clock skew, lost
replies). Runs until SIGINT/SIGTERM, then unmounts. Needs root.

options:
  --attr-ttl SECS        attribute cache lifetime, files (acregmin; default 3)
  --dir-ttl SECS         attribute cache lifetime, directories (acdirmin; default 3)
  --entry-ttl SECS       lookup cache lifetime, negative lookups too (default 3)
  --no-cto               open() does not revalidate (no close-to-open)
  --clock-offset SECS    server clock minus client clock (e.g. -600)
  --granularity SECS     timestamp granularity (default 1; 0 = ns)
  --fault KIND=P         inject KIND with probability P
  --fault KIND@N,M,...   inject KIND on the Nth, Mth... eligible call
                         KIND: link-eexist link-eio create-excl-eexist
                               unlink-enoent rename-enoent lookup-estale
  --no-fcntl-revalidate  fcntl lock calls keep cached attributes
  --locks MODE           fcntl locks: server (default; exclude across mounts),
                         unsupported (every lock call fails with ENOLCK),
                         local (a `nolock` mount: exclude this mount only)
  --seed N               fault injector seed
  --threads N            FUSE worker threads (default 2)
  --allow-other          let other users use the mount
  --stats                print fault and cache counters on exit";

fn secs(v: &str) -> Result<Duration, String> {
    let f: f64 = v
        .parse()
        .map_err(|_| format!("not a number of seconds: {v}"))?;
    Duration::try_from_secs_f64(f).map_err(|_| format!("bad duration: {v}"))
}

fn parse_fault(spec: &str, config: &mut SimConfig) -> Result<(), String> {
    let (kind, fault) = if let Some((kind, p)) = spec.split_once('=') {
        let p: f64 = p
            .parse()
            .map_err(|_| format!("bad probability in {spec}"))?;
        (kind, Fault::probability(p))
    } else if let Some((kind, calls)) = spec.split_once('@') {
        let calls = calls
            .split(',')
            .map(|n| n.parse::<u64>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| format!("bad call list in {spec}"))?;
        (kind, Fault::on_calls(&calls))
    } else {
        return Err(format!("bad fault: {spec} (KIND=P or KIND@N,M)"));
    };
    let f = &mut config.faults;
    *match kind {
        "link-eexist" => &mut f.link_eexist,
        "link-eio" => &mut f.link_eio,
        "create-excl-eexist" => &mut f.create_excl_eexist,
        "unlink-enoent" => &mut f.unlink_enoent,
        "rename-enoent" => &mut f.rename_enoent,
        "lookup-estale" => &mut f.lookup_estale,
        _ => return Err(format!("unknown fault kind: {kind}")),
    } = fault;
    Ok(())
}

fn run() -> Result<(), String> {
    let mut config = SimConfig::default();
    let mut positional: Vec<PathBuf> = Vec::new();
    let mut stats = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            "--attr-ttl" => config.attr_ttl = secs(&value()?)?,
            "--dir-ttl" => config.dir_attr_ttl = secs(&value()?)?,
            "--entry-ttl" => config.entry_ttl = secs(&value()?)?,
            "--no-cto" => config.close_to_open = false,
            "--clock-offset" => {
                let v = value()?;
                let s: f64 = v.parse().map_err(|_| format!("bad offset: {v}"))?;
                config.clock_offset_ms = (s * 1000.0) as i64;
            }
            "--granularity" => config.granularity = secs(&value()?)?,
            "--fault" => parse_fault(&value()?, &mut config)?,
            "--no-fcntl-revalidate" => config.fcntl_revalidates = false,
            "--locks" => {
                config.locks = match value()?.as_str() {
                    "server" => LockMode::Server,
                    "unsupported" => LockMode::Unsupported,
                    "local" => LockMode::Local,
                    other => return Err(format!("unknown lock mode: {other}")),
                };
            }
            "--seed" => {
                let v = value()?;
                config.seed = v.parse().map_err(|_| format!("bad seed: {v}"))?;
            }
            "--threads" => {
                let v = value()?;
                config.threads = v.parse().map_err(|_| format!("bad thread count: {v}"))?;
            }
            "--allow-other" => config.allow_other = true,
            "--stats" => stats = true,
            s if s.starts_with('-') => return Err(format!("unknown option {s}\n\n{USAGE}")),
            _ => positional.push(arg.into()),
        }
    }
    let [backing, mountpoint] = positional.as_slice() else {
        return Err(USAGE.to_string());
    };
    if let Some(reason) = nfs_sim::unavailable_reason() {
        return Err(reason);
    }
    // Block the stop signals before the FUSE threads start, so they are
    // delivered to sigwait below.
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGINT);
    stop.add(Signal::SIGTERM);
    stop.thread_block().map_err(|e| e.to_string())?;
    let mount = Mount::new(backing, mountpoint, config)
        .map_err(|e| format!("mounting {}: {e}", mountpoint.display()))?;
    eprintln!(
        "nfs-sim: {} mounted at {}",
        backing.display(),
        mountpoint.display()
    );
    let _ = stop.wait();
    if stats {
        eprintln!("nfs-sim: {:?}", mount.stats());
    }
    let teardown = mount.unmount().map_err(|e| format!("unmounting: {e}"))?;
    if teardown.aborted {
        eprintln!(
            "nfs-sim: unmounted in {:?}, FUSE connection {} aborted",
            teardown.elapsed, teardown.connection
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nfs-sim: {e}");
            ExitCode::from(2)
        }
    }
}
