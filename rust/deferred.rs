// SPDX-License-Identifier: GPL-2.0

//! Deferred reclaim: writer step 4 (`protocol/writer.rs`) after a grace period the
//! writer does not wait for.
//!
//! Engines `spf` and `rcu` with `VMALAB_CONFIG_DEFERRED` check under the PTE lock,
//! right before each install, that the fault's region is still published
//! (`Region::still_published`, or `spf`'s sequence count). Once a writer has
//! published, retired what it took out and zapped, no fault can install a PTE for it
//! any more; what is left is *memory* that faults may still touch: a fault inside its
//! RCU read section may still read the map entry, the region, and store a page in one
//! of its slots; an `rcu` fault that holds an entry may still do so after its read
//! section. So the writer hands what it took out to this queue and returns:
//!
//! 1. the writer, after its zap, takes a grace-period cookie
//!    (`get_state_synchronize_rcu`, a load) and appends a [`Batch`] to its space's
//!    [`Pending`] list, then queues the space's work item on the module's workqueue;
//! 2. the worker sleeps [`BATCH_WINDOW`] (so that a burst of writers is reclaimed in
//!    one run), takes every pending batch, waits for the grace period of the newest
//!    cookie (`cond_synchronize_rcu`: not at all if one has elapsed meanwhile; one wait
//!    covers the whole list), so every fault that could have found those regions under
//!    RCU has left its read section; then the engine drains the holds and frees the
//!    entries (`Engine::reclaim_deferred`), and the space punches the pages of what
//!    died and drops the regions (`Space::free_unpublished`);
//! 3. `VMALAB_IOC_SYNC` and the file's release wait until every batch queued before
//!    them is done.
//!
//! The workqueue is the module's own ([`ReclaimQueue`]), destroyed at module exit,
//! which waits for every work item: a worker still running module code (it may drop
//! the last reference to a space) cannot outlive the module.
//!
//! Lock order: a space's `pending` mutex is innermost; nothing is taken under it
//! (the worker runs the batches with it released).

use crate::engine::Unpublished;
use core::ptr::null_mut;
use kernel::{
    bindings,
    ffi::c_ulong,
    prelude::*,
    sync::atomic::{Acquire, Atomic, Release},
    time::Delta,
    workqueue::Queue,
};

/// How long the worker lets batches gather before it takes them: back-to-back writers
/// then cost one wake-up and one grace-period wait per window, not per operation.
pub(crate) const BATCH_WINDOW: Delta = Delta::from_millis(1);

/// The module's workqueue for deferred reclaim, set while the module is loaded.
static QUEUE: Atomic<*mut bindings::workqueue_struct> = Atomic::new(null_mut());

/// Owner of the module's reclaim workqueue: created at module init, destroyed (after
/// every queued work item ran) when the module is unloaded.
///
/// # Invariants
///
/// `QUEUE` holds a workqueue allocated by [`ReclaimQueue::new`] from its return until
/// this value is dropped, and only one `ReclaimQueue` exists at a time.
pub(crate) struct ReclaimQueue(());

impl ReclaimQueue {
    /// Allocates the workqueue (unbound: the reclaim of one space is not tied to the
    /// CPU its writer ran on).
    pub(crate) fn new() -> Result<Self> {
        let flags = bindings::wq_flags_WQ_UNBOUND as kernel::ffi::c_uint;
        // SAFETY: A C string literal for the name (no format arguments follow), valid
        // flags, and 0 for the default `max_active`.
        let wq =
            unsafe { bindings::alloc_workqueue_noprof(c"vmalab_reclaim".as_char_ptr(), flags, 0) };
        if wq.is_null() {
            return Err(ENOMEM);
        }
        // INVARIANT: set once here, cleared in `drop`; the module creates one.
        QUEUE.store(wq, Release);
        Ok(Self(()))
    }
}

impl Drop for ReclaimQueue {
    fn drop(&mut self) {
        let wq = QUEUE.xchg(null_mut(), Acquire);
        if !wq.is_null() {
            // SAFETY: `wq` came from `alloc_workqueue` (type invariant) and no space is
            // left to queue work on it (the module is being unloaded, so every file was
            // released); `destroy_workqueue` runs what is still queued first.
            unsafe { bindings::destroy_workqueue(wq) };
        }
    }
}

/// The module's reclaim workqueue (`None` only if the module failed to create it,
/// in which case writers reclaim in place).
pub(crate) fn queue() -> Option<&'static Queue> {
    let wq = QUEUE.load(Acquire);
    if wq.is_null() {
        return None;
    }
    // SAFETY: A non-null `QUEUE` is a live workqueue until module exit
    // (`ReclaimQueue`'s invariant), and every caller is module code running in a file
    // operation or a work item of this queue, all of which end before module exit.
    Some(unsafe { Queue::from_raw(wq) })
}

/// A grace-period cookie (`get_state_synchronize_rcu`).
#[derive(Clone, Copy)]
pub(crate) struct GraceCookie(c_ulong);

impl GraceCookie {
    /// The state of RCU now: a grace period that begins after this call ends after
    /// every read section that began before it.
    pub(crate) fn now() -> Self {
        // SAFETY: No requirement; reads RCU's grace-period sequence.
        Self(unsafe { bindings::get_state_synchronize_rcu() })
    }

    /// Sleeps until a full grace period has elapsed since [`Self::now`] (not at all if
    /// one already has). Process context, no locks held.
    pub(crate) fn wait(self) {
        // SAFETY: The cookie came from `get_state_synchronize_rcu`; the caller may sleep.
        unsafe { bindings::cond_synchronize_rcu(self.0) };
    }
}

/// One writer operation's leftovers, waiting for their grace period.
pub(crate) struct Batch {
    /// Taken after the writer's zap.
    pub(crate) cookie: GraceCookie,
    /// What the writer took out (regions, and the engine's map entries).
    pub(crate) unpublished: Unpublished,
    /// The `VMALAB_MUTANT_*` bits armed when the writer began.
    pub(crate) mutants: u32,
}

/// A space's batches waiting for the worker, with the counts `VMALAB_IOC_SYNC` waits
/// on.
pub(crate) struct Pending {
    /// Not yet taken by the worker.
    pub(crate) batches: KVec<Batch>,
    /// Batches ever queued.
    pub(crate) queued: u64,
    /// Batches whose memory has been freed.
    pub(crate) done: u64,
}

impl Pending {
    /// An empty list.
    pub(crate) fn new() -> Self {
        Self {
            batches: KVec::new(),
            queued: 0,
            done: 0,
        }
    }
}
