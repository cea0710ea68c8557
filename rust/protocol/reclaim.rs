// SPDX-License-Identifier: GPL-2.0

//! The `rcu` writer's reclaim order for entries it has just unpublished (removed
//! from the map): wait a grace period, so that every reader that could have found them
//! has left its read section (and every hold made from them is counted); then, entry
//! by entry, drain the holds ([`super::hold::drain`]) and free the entry. This is the
//! `rcu` engine's quiesce step of `protocol/writer.rs`; the zap and the freeing of the
//! regions' pages follow it there.
//!
//! The test mutants of the selftests are here too, so the loom model checks the very
//! code the negative controls arm in the guest: skipping the grace period (and the
//! drain), or the drain alone, parks the entries instead of freeing them (the module
//! keeps them until the map is dropped).
//!
//! Compiled into the module (`rcu_tree.rs`) and into `tools/model`.

/// How [`reclaim`] waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// `synchronize_rcu()`, then each entry's holds.
    Normal,
    /// `synchronize_rcu_expedited()` (IPIs every CPU, shorter), then the holds.
    Expedited,
    /// The caller already waited for a grace period since the entries were
    /// unpublished (deferred reclaim, `deferred.rs`): only the holds.
    Elapsed,
    /// No reader can have found the entries: the caller excluded them for as long as
    /// the entries were reachable (the `range` engine's range lock). Only the holds
    /// (there are none).
    Excluded,
    /// Test mutant: no grace period and no drain (the entries are parked, not freed).
    MutantSkipGracePeriod,
    /// Test mutant: a grace period but no drain (the entries are parked, not freed).
    MutantSkipDrain,
}

/// What [`reclaim`] needs from the map.
pub(crate) trait Reclaimer {
    /// An unpublished entry.
    type Entry;
    /// Waits for a grace period (`expedited`: the expedited kind).
    fn grace_period(&mut self, expedited: bool);
    /// Waits until no hold on `entry` is left; returns whether it had to wait.
    fn drain(&mut self, entry: &Self::Entry) -> bool;
    /// Frees `entry` (no reader can reach it any more).
    fn free(&mut self, entry: Self::Entry);
    /// Keeps `entry` alive until the map goes (test mutants only).
    fn park(&mut self, entry: Self::Entry);
}

/// Reclaims `entries`, just unpublished; returns how many had holds to wait for.
pub(crate) fn reclaim<R: Reclaimer>(
    r: &mut R,
    entries: impl IntoIterator<Item = R::Entry>,
    wait: Wait,
) -> u64 {
    match wait {
        Wait::Normal | Wait::MutantSkipDrain => r.grace_period(false),
        Wait::Expedited => r.grace_period(true),
        Wait::MutantSkipGracePeriod | Wait::Elapsed | Wait::Excluded => {}
    }
    if matches!(wait, Wait::MutantSkipGracePeriod | Wait::MutantSkipDrain) {
        for e in entries {
            r.park(e);
        }
        return 0;
    }
    let mut waits = 0;
    for e in entries {
        if r.drain(&e) {
            waits += 1;
        }
        r.free(e);
    }
    waits
}
