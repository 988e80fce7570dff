//! What this client is shown of the server's files: attributes with the
//! server's clock shifted by [`SimConfig::clock_offset_ms`] and truncated
//! to [`SimConfig::granularity`], and the times a client sets taken back to
//! the server's frame.
//!
//! [`SimConfig::clock_offset_ms`]: crate::SimConfig::clock_offset_ms
//! [`SimConfig::granularity`]: crate::SimConfig::granularity

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo, TimeOrNow};
use nix::sys::stat::{FileStat, SFlag};
use nix::sys::time::TimeSpec;

use super::State;

impl State {
    /// Server time as this client is shown it.
    fn shown_time(&self, secs: i64, nsecs: i64) -> SystemTime {
        let real_ns = secs as i128 * 1_000_000_000 + nsecs as i128;
        let mut ns = real_ns + self.config.clock_offset_ms as i128 * 1_000_000;
        let g = self.config.granularity.as_nanos() as i128;
        if g > 0 {
            ns = ns.div_euclid(g) * g;
        }
        if ns >= 0 {
            UNIX_EPOCH + Duration::from_nanos(ns as u64)
        } else {
            UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs() as u64)
        }
    }

    /// A time the client set, in the server's frame.
    fn server_time(&self, t: SystemTime) -> TimeSpec {
        let ns: i128 = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i128,
            Err(e) => -(e.duration().as_nanos() as i128),
        };
        let ns = ns - self.config.clock_offset_ms as i128 * 1_000_000;
        TimeSpec::new(
            ns.div_euclid(1_000_000_000) as i64,
            ns.rem_euclid(1_000_000_000) as i64,
        )
    }

    pub(super) fn attr_of(&self, st: &FileStat) -> FileAttr {
        let fmt = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
        let kind = match fmt {
            SFlag::S_IFDIR => FileType::Directory,
            SFlag::S_IFLNK => FileType::Symlink,
            SFlag::S_IFIFO => FileType::NamedPipe,
            SFlag::S_IFSOCK => FileType::Socket,
            SFlag::S_IFCHR => FileType::CharDevice,
            SFlag::S_IFBLK => FileType::BlockDevice,
            _ => FileType::RegularFile,
        };
        FileAttr {
            ino: INodeNo(self.fuse_ino(st.st_ino)),
            size: st.st_size as u64,
            blocks: st.st_blocks as u64,
            atime: self.shown_time(st.st_atime, st.st_atime_nsec),
            mtime: self.shown_time(st.st_mtime, st.st_mtime_nsec),
            ctime: self.shown_time(st.st_ctime, st.st_ctime_nsec),
            crtime: self.shown_time(st.st_ctime, st.st_ctime_nsec),
            kind,
            perm: (st.st_mode & 0o7777) as u16,
            nlink: st.st_nlink as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev as u32,
            blksize: 4096,
            flags: 0,
        }
    }
}

pub(super) fn time_spec(state: &State, t: Option<TimeOrNow>) -> TimeSpec {
    match t {
        None => TimeSpec::UTIME_OMIT,
        Some(TimeOrNow::Now) => TimeSpec::UTIME_NOW,
        Some(TimeOrNow::SpecificTime(t)) => state.server_time(t),
    }
}
