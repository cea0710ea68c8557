// SPDX-License-Identifier: GPL-2.0

//! The `rcu` engine's fault (Wilcox, seed 002): look the region up under RCU; map the
//! page inside the same read section if that needs no sleep (the fast path, which
//! writes no shared line); otherwise *hold* the entry before leaving the read section,
//! then produce and map the page, then release the hold (`protocol/hold.rs`).
//!
//! The order is the protocol: a fast-path install inside the read section is what the
//! writer's grace period waits for; a hold taken inside the read section is what its
//! drain counts. Installing after leaving the section without a hold, or holding after
//! leaving it, lets a PTE for an unpublished region appear after the zap.
//!
//! Compiled into the module (`engine/rcu.rs`) and into `tools/model`.

/// The steps of one fault.
pub(crate) trait RcuFault {
    /// A read section; dropping it leaves the section.
    type Guard;
    /// An entry found in the map, usable until its read section ends.
    type Found<'g>
    where
        Self: 'g;
    /// An entry held past the read section; dropping it releases the hold.
    type Held;
    /// How the fault ended.
    type Out;

    /// Enters a read section.
    fn read_lock(&self) -> Self::Guard;
    /// Finds the entry covering the faulting page.
    fn lookup<'g>(&'g self, guard: &'g Self::Guard) -> Option<Self::Found<'g>>;
    /// No entry covers the page (`SIGBUS`).
    fn missing(&self) -> Self::Out;
    /// Maps the page if that needs no sleep; `None`: it needs one.
    fn map_atomic(&self, found: &Self::Found<'_>) -> Option<Self::Out>;
    /// Holds `found` (found under `guard`, which is still held).
    fn hold<'g>(&'g self, found: Self::Found<'g>, guard: &'g Self::Guard) -> Self::Held;
    /// Produces and maps the page (may sleep); releases the hold when it is done.
    fn map_held(&self, held: Self::Held) -> Self::Out;
}

/// Runs one fault.
#[inline]
pub(crate) fn fault<F: RcuFault>(f: &F) -> F::Out {
    let guard = f.read_lock();
    let Some(found) = f.lookup(&guard) else {
        return f.missing();
    };
    if let Some(out) = f.map_atomic(&found) {
        return out; // Installed inside the read section.
    }
    let held = f.hold(found, &guard);
    drop(guard);
    f.map_held(held)
}
