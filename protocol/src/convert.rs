//! Between the lockfile crate's types and their wire forms: the one home
//! of these conversions, used by the helper (lockfile to wire) and by the
//! client (wire to lockfile).
//!
//! The wire forms carry less than the lockfile types: a [`HolderInfo`]
//! has the holder's pid, host and modification time (whole seconds), not
//! its boot id, start time or owner, and a [`WaitSpec::TimeoutMs`] is a
//! duration where [`Wait::Until`] is an instant.

use std::time::{Duration, Instant, UNIX_EPOCH};

use spoollock_lockfile::{Holder, LockContent, LockState, StaleReason, Wait};

use crate::message::{HolderInfo, LockStatus, StaleKind, WaitSpec};

impl From<&Holder> for HolderInfo {
    fn from(holder: &Holder) -> HolderInfo {
        let mtime_secs = match holder.mtime.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
        };
        HolderInfo {
            pid: holder.content.pid,
            host: holder.content.host.clone(),
            mtime_secs,
        }
    }
}

/// What the helper said about a holder, as a [`Holder`]: what the wire
/// does not carry is unknown (`None`), and a modification time before
/// the epoch becomes the epoch.
impl From<HolderInfo> for Holder {
    fn from(h: HolderInfo) -> Holder {
        let mtime = match u64::try_from(h.mtime_secs) {
            Ok(secs) => UNIX_EPOCH + Duration::from_secs(secs),
            Err(_) => UNIX_EPOCH,
        };
        Holder {
            content: LockContent {
                pid: h.pid,
                host: h.host,
                boot: None,
                start: None,
                append: None,
            },
            mtime,
            owner: None,
        }
    }
}

impl From<StaleReason> for StaleKind {
    fn from(reason: StaleReason) -> StaleKind {
        match reason {
            StaleReason::DeadProcess => StaleKind::DeadProcess,
            StaleReason::PidReused => StaleKind::PidReused,
            StaleReason::Age => StaleKind::Age,
        }
    }
}

impl From<StaleKind> for StaleReason {
    fn from(kind: StaleKind) -> StaleReason {
        match kind {
            StaleKind::DeadProcess => StaleReason::DeadProcess,
            StaleKind::PidReused => StaleReason::PidReused,
            StaleKind::Age => StaleReason::Age,
        }
    }
}

impl From<&LockState> for LockStatus {
    fn from(state: &LockState) -> LockStatus {
        match state {
            LockState::Free => LockStatus::Free,
            LockState::Held(holder) => LockStatus::Held(holder.into()),
            LockState::Stale(holder, reason) => LockStatus::Stale(holder.into(), (*reason).into()),
        }
    }
}

impl From<LockStatus> for LockState {
    fn from(status: LockStatus) -> LockState {
        match status {
            LockStatus::Free => LockState::Free,
            LockStatus::Held(h) => LockState::Held(h.into()),
            LockStatus::Stale(h, kind) => LockState::Stale(h.into(), kind.into()),
        }
    }
}

/// The wait a request asks for; a timeout starts now.
impl From<WaitSpec> for Wait {
    fn from(wait: WaitSpec) -> Wait {
        match wait {
            WaitSpec::NoWait => Wait::NoWait,
            WaitSpec::Retries(n) => Wait::Retries(n),
            WaitSpec::TimeoutMs(ms) => Wait::timeout(Duration::from_millis(ms)),
            WaitSpec::Forever => Wait::Forever,
        }
    }
}

/// The wait to ask the helper for; a deadline becomes the time left until
/// it (zero once it has passed).
impl From<Wait> for WaitSpec {
    fn from(wait: Wait) -> WaitSpec {
        match wait {
            Wait::NoWait => WaitSpec::NoWait,
            Wait::Retries(n) => WaitSpec::Retries(n),
            Wait::Until(deadline) => WaitSpec::TimeoutMs(
                u64::try_from(
                    deadline
                        .saturating_duration_since(Instant::now())
                        .as_millis(),
                )
                .unwrap_or(u64::MAX),
            ),
            Wait::Forever => WaitSpec::Forever,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_keeps_what_the_wire_carries() {
        let holder = Holder {
            content: LockContent {
                pid: Some(42),
                host: Some("mx".into()),
                boot: None,
                start: None,
                append: None,
            },
            mtime: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            owner: None,
        };
        let info = HolderInfo::from(&holder);
        assert_eq!(info.mtime_secs, 1_700_000_000);
        assert_eq!(Holder::from(info), holder);
        let before = HolderInfo {
            pid: None,
            host: None,
            mtime_secs: -5,
        };
        assert_eq!(Holder::from(before).mtime, UNIX_EPOCH);
        let early = Holder {
            mtime: UNIX_EPOCH - Duration::from_secs(5),
            ..holder
        };
        assert_eq!(HolderInfo::from(&early).mtime_secs, -5);
    }

    #[test]
    fn stale_reasons_and_waits_round_trip() {
        for reason in [
            StaleReason::DeadProcess,
            StaleReason::PidReused,
            StaleReason::Age,
        ] {
            assert_eq!(StaleReason::from(StaleKind::from(reason)), reason);
        }
        for wait in [WaitSpec::NoWait, WaitSpec::Retries(3), WaitSpec::Forever] {
            assert_eq!(WaitSpec::from(Wait::from(wait)), wait);
        }
        match WaitSpec::from(Wait::from(WaitSpec::TimeoutMs(60_000))) {
            WaitSpec::TimeoutMs(ms) => assert!((59_000..=60_000).contains(&ms), "{ms}"),
            other => panic!("{other:?}"),
        }
    }
}
