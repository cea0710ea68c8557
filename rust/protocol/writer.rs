// SPDX-License-Identifier: GPL-2.0

//! The order every writer operation (MAP over old regions, UNMAP, REPLACE) follows,
//! whatever the engine:
//!
//! 1. **publish** (engine): the new region set becomes what faults find; the regions
//!    taken out of it are handed over as "unpublished";
//! 2. **quiesce** (engine): returns once no fault — in flight or future — can still
//!    install a PTE for an unpublished region (`rcu`: a grace period, then the holds
//!    drain, `protocol/reclaim.rs`; `rwsem`: nothing left to wait for, its publish
//!    took the lock every fault holds);
//! 3. **zap** (space): the PTEs of the range go; none can come back (step 2);
//! 4. **free** (space): the unpublished regions and their pages are freed.
//!
//! Zapping before step 2 ends would let a fault still in flight install a PTE after
//! the zap; freeing before the zap would leave PTEs to freed pages. The test mutant
//! that skips the zap is here too, so the loom model checks the very code the
//! selftests' negative control arms.
//!
//! Compiled into the module (`space.rs` runs it with the engine's steps) and into
//! `tools/model`.

/// Whether [`write`] zaps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Zap {
    /// Step 3 as described.
    Normal,
    /// Test mutant: no zap (the caller must then park the regions instead of freeing
    /// them: their pages may still be mapped).
    MutantSkip,
}

/// The four steps of one writer operation.
pub(crate) trait Writer {
    /// What step 1 took out of the region set, and where.
    type Unpublished;
    /// Why step 1 failed (then nothing changed).
    type Error;
    /// Step 1: makes the new region set visible to faults; fails only before any
    /// change.
    fn publish(&mut self) -> Result<Self::Unpublished, Self::Error>;
    /// Step 2: waits until no fault can install a PTE for an unpublished region.
    fn quiesce(&mut self, unpublished: &mut Self::Unpublished);
    /// Step 3: removes every PTE of the unpublished regions' range.
    fn zap(&mut self, unpublished: &Self::Unpublished);
    /// Step 4: frees the unpublished regions and their pages.
    fn free(&mut self, unpublished: Self::Unpublished);
}

/// Runs one writer operation in the order above.
pub(crate) fn write<W: Writer>(w: &mut W, zap: Zap) -> Result<(), W::Error> {
    let mut unpublished = w.publish()?;
    w.quiesce(&mut unpublished);
    if zap == Zap::Normal {
        w.zap(&unpublished);
    }
    w.free(unpublished);
    Ok(())
}
