// SPDX-License-Identifier: GPL-2.0

//! The hold protocol of the `rcu` engine (Wilcox, seed 002): a fault that must sleep
//! *holds* the entry it found under RCU; a writer that removed the entry waits, after
//! a grace period, for the holds to drain before it frees it.
//!
//! One word per entry: the number of holds in the low bits, [`DRAINING`] in the top
//! bit, set by the writer once it reclaims the entry. The rules:
//!
//! - [`hold`]: one fully ordered increment, made inside the RCU read section in which
//!   the entry was found (so the writer's grace period orders it before the drain).
//! - [`release`]: one fully ordered decrement; whether the releaser must wake the
//!   writer is decided from the value *that decrement* returned. After it, the
//!   releaser never touches the entry again: once the count is zero the writer may
//!   free it at any moment.
//! - [`drain`]: the writer sets [`DRAINING`] with one fully ordered RMW; if holds were
//!   counted, it sleeps until the word is exactly [`DRAINING`], checking under the
//!   waiter's lock, where the last releaser wakes it (`DrainWait`).
//!
//! Compiled into the module (`rcu_tree.rs` implements the traits with `Atomic<u32>`
//! and a `Mutex` + `CondVar`) and into `tools/model` (loom's atomics, `Mutex` and
//! `Condvar`), which checks: no access to a freed entry, no lost wake-up, no
//! deadlock, no PTE installed after the writer's zap.

/// Bit of the hold word set by the writer that reclaims the entry.
pub(crate) const DRAINING: u32 = 1 << 31;

/// The hold word of one entry.
pub(crate) trait HoldWord {
    /// Fully ordered `fetch_add`; returns the old value.
    fn add_full(&self, v: u32) -> u32;
    /// Fully ordered `fetch_sub`; returns the old value.
    fn sub_full(&self, v: u32) -> u32;
    /// Load with acquire ordering.
    fn load_acquire(&self) -> u32;
}

/// Where a writer sleeps until its entry drained, and where releasers wake it.
///
/// Implementations check the condition and go to sleep under one lock, and wake
/// under the same lock, so that a wake-up between the check and the sleep is not lost.
pub(crate) trait DrainWait {
    /// Sleeps until `done()` holds (checked under the lock).
    fn wait_until(&self, done: &dyn Fn() -> bool);
    /// Wakes every sleeper (under the lock).
    fn wake_all(&self);
}

/// A reader holds the entry (inside the read section in which it found it).
#[inline]
pub(crate) fn hold(word: &impl HoldWord) {
    word.add_full(1);
}

/// A reader releases its hold. Returns whether it must call [`DrainWait::wake_all`]
/// (it was the last hold, and a writer waits). The caller must not touch the entry
/// after this returns.
#[inline]
#[must_use]
pub(crate) fn release(word: &impl HoldWord) -> bool {
    word.sub_full(1) == DRAINING | 1
}

/// The writer, after the grace period that follows the entry's removal: waits until
/// no hold is left. Returns whether it had to wait. The entry may be freed after this.
pub(crate) fn drain(word: &impl HoldWord, waiter: &impl DrainWait) -> bool {
    // DRAINING is set once, above any count: the add acts as an or.
    if word.add_full(DRAINING) == 0 {
        return false;
    }
    waiter.wait_until(&|| word.load_acquire() == DRAINING);
    true
}
