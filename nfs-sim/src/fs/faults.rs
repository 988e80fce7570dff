//! Lost replies: which eligible calls get a fault ([`crate::Faults`], by
//! probability from a seeded generator or by schedule), counted in
//! [`Stats`](super::Stats).

use super::State;
use crate::Fault;

#[derive(Debug, Clone, Copy)]
pub(super) enum FaultKind {
    LinkEexist,
    LinkEio,
    CreateExclEexist,
    UnlinkEnoent,
    RenameEnoent,
    LookupEstale,
}

impl State {
    fn random(&mut self) -> f64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Decide whether this eligible call of `kind` gets a fault, and count it.
    pub(super) fn inject(&mut self, kind: FaultKind) -> bool {
        let fault: &Fault = match kind {
            FaultKind::LinkEexist => &self.config.faults.link_eexist,
            FaultKind::LinkEio => &self.config.faults.link_eio,
            FaultKind::CreateExclEexist => &self.config.faults.create_excl_eexist,
            FaultKind::UnlinkEnoent => &self.config.faults.unlink_enoent,
            FaultKind::RenameEnoent => &self.config.faults.rename_enoent,
            FaultKind::LookupEstale => &self.config.faults.lookup_estale,
        };
        if !fault.is_active() {
            return false;
        }
        let (p, scheduled) = {
            let n = self.fault_calls[kind as usize] + 1;
            (fault.probability, fault.schedule.contains(&n))
        };
        self.fault_calls[kind as usize] += 1;
        let hit = scheduled || (p > 0.0 && self.random() < p);
        if hit {
            let s = &mut self.stats;
            *match kind {
                FaultKind::LinkEexist => &mut s.link_eexist,
                FaultKind::LinkEio => &mut s.link_eio,
                FaultKind::CreateExclEexist => &mut s.create_excl_eexist,
                FaultKind::UnlinkEnoent => &mut s.unlink_enoent,
                FaultKind::RenameEnoent => &mut s.rename_enoent,
                FaultKind::LookupEstale => &mut s.lookup_estale,
            } += 1;
        }
        hit
    }
}
