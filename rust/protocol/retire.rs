// SPDX-License-Identifier: GPL-2.0

//! Retiring ranges, for every engine (`space.rs` runs it around step 1 and after
//! step 4 of `writer.rs`).
//!
//! From its publish until its free, a writer operation that took regions out keeps
//! their range on the space's *retiring* list: the old regions' PTEs may still exist
//! there until its zap (and for `rcu`, faults in flight may still install some until
//! its quiesce). The rule:
//!
//! - [`publish`]: under the list's lock, a writer waits until no retiring range
//!   conflicts with its own ([`must_wait`]: overlaps it; a MAP placed anywhere, whose
//!   range the engine chooses, conflicts with every one). A writer whose range is
//!   known puts it on the list (a claim) before it publishes, so no other writer's
//!   check can miss it, and publishes without the list's lock; the claim stays if the
//!   publish took regions out, else it leaves at once. A MAP placed anywhere
//!   publishes under the list's lock and then puts nothing there (it takes nothing
//!   out) — unless the engine has its own allocator ([`publish_placed`], `ptshard`):
//!   then, under the list's lock, it places the MAP where no retiring range is and
//!   claims that range at once, and publishes as a writer with a known range;
//! - [`finish`]: after step 4, the range leaves the list and the waiters are woken.
//!
//! Without it a MAP could be placed where an UNMAP had published but not yet zapped:
//! the new region's stores went through the old PTEs into the old pages and vanished
//! at the old zap (found by the benchmark's ebizzy, issue 10). The kernel has the same
//! rule: `munmap` keeps `mmap_lock` from every other `mmap` until its zap is done.
//!
//! Compiled into the module and into `tools/model` (`tests/retire.rs`), which checks
//! that a store into a freshly mapped region never lands in an old region's page, and
//! that the mutant without the wait is caught.

/// The pages a writer operation works on, as far as they are known before it
/// publishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Span {
    /// A MAP the engine places: not known before the publish.
    Anywhere,
    /// Pages `[start, end)`.
    At(usize, usize),
}

/// Whether a writer operation on `span` must wait for a running one retiring
/// `[lo, hi)`.
pub(crate) fn must_wait(span: Span, (lo, hi): (usize, usize)) -> bool {
    match span {
        Span::Anywhere => true,
        Span::At(start, end) => start < hi && lo < end,
    }
}

/// The retiring list, with its lock and its wait queue.
pub(crate) trait RetireList {
    /// The list, locked.
    type Locked<'a>: Retiring
    where
        Self: 'a;
    /// Locks the list.
    fn lock(&self) -> Self::Locked<'_>;
    /// Sleeps until [`RetireList::notify_all`], the lock released meanwhile. Returns
    /// `true` if a signal interrupted the sleep.
    fn wait(&self, locked: &mut Self::Locked<'_>) -> bool;
    /// Wakes every waiter.
    fn notify_all(&self);
}

/// The locked list.
pub(crate) trait Retiring {
    /// Whether any range on the list satisfies `f`.
    fn any(&self, f: &dyn Fn((usize, usize)) -> bool) -> bool;
    /// Makes room for one more range; `false` if out of memory.
    fn reserve_one(&mut self) -> bool;
    /// Adds a range, in the room [`Retiring::reserve_one`] made.
    fn push(&mut self, range: (usize, usize));
    /// Removes one entry equal to `range`.
    fn remove(&mut self, range: (usize, usize));
}

/// Why [`publish`] gave up before publishing anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The list could not grow.
    OutOfMemory,
    /// A signal came while the writer waited (the wait is interruptible: a writer
    /// placing anywhere waits for an empty list, which a stream of other writers could
    /// put off for long).
    Interrupted,
}

/// Writer step 1 under the rule: waits (unless `skip_wait`, the test mutant) until no
/// retiring range conflicts with `span`, then runs `publish`, which returns its output
/// and the range it took regions out of (if any); that range goes on the list.
/// Returns the output and the range to hand to [`finish`]. `refused` makes the error
/// for giving up before the publish (nothing changed then).
pub(crate) fn publish<L: RetireList, T, E>(
    list: &L,
    span: Span,
    skip_wait: bool,
    refused: impl Fn(Refused) -> E,
    publish: impl FnOnce() -> Result<(T, Option<(usize, usize)>), E>,
) -> Result<(T, Option<(usize, usize)>), E> {
    let mut locked = list.lock();
    if !skip_wait {
        while locked.any(&|r| must_wait(span, r)) {
            if list.wait(&mut locked) {
                return Err(refused(Refused::Interrupted));
            }
        }
    }
    if !locked.reserve_one() {
        return Err(refused(Refused::OutOfMemory));
    }
    let Span::At(start, end) = span else {
        // A MAP the engine places: where is known only after its publish, so the list
        // stays locked across it (no writer retires a range it might pick meanwhile).
        let (out, range) = publish()?;
        if let Some(r) = range {
            locked.push(r);
        }
        return Ok((out, range));
    };
    // A known range: claim it, then publish without the list's lock, so that writers
    // elsewhere (and an engine's wait for faults in this range, `range`) go on in
    // parallel.
    locked.push((start, end));
    drop(locked);
    publish_claimed(list, (start, end), publish)
}

/// Writer step 1 for a MAP the engine places with its own allocator (`ptshard`): under
/// the list's lock, `place` reserves a range that overlaps no retiring one — it is
/// given `busy(start, end)`, the end of the last retiring range overlapping `[start,
/// end)` (`None`: free to take; with `skip_wait`, the test mutant, always `None`) —
/// and that range is claimed at once. So a writer that claims an overlapping range
/// later waits for this MAP, and this MAP never lands where a writer is still
/// retiring regions; it publishes without the list's lock and never waits.
pub(crate) fn publish_placed<L: RetireList, T, E>(
    list: &L,
    skip_wait: bool,
    refused: impl Fn(Refused) -> E,
    place: impl FnOnce(&dyn Fn(usize, usize) -> Option<usize>) -> Result<(usize, usize), E>,
    publish: impl FnOnce((usize, usize)) -> Result<(T, Option<(usize, usize)>), E>,
) -> Result<(T, Option<(usize, usize)>), E> {
    let mut locked = list.lock();
    if !locked.reserve_one() {
        return Err(refused(Refused::OutOfMemory));
    }
    let busy = |start: usize, end: usize| {
        let last = core::cell::Cell::new(None);
        if !skip_wait {
            locked.any(&|(lo, hi)| {
                if start < hi && lo < end {
                    last.set(Some(last.get().map_or(hi, |e: usize| e.max(hi))));
                }
                false
            });
        }
        last.get()
    };
    let range = place(&busy)?;
    locked.push(range);
    drop(locked);
    publish_claimed(list, range, || publish(range))
}

/// Publishes with `range` claimed on the list; the claim stays if the publish took
/// regions out, else it goes now.
fn publish_claimed<L: RetireList, T, E>(
    list: &L,
    (start, end): (usize, usize),
    publish: impl FnOnce() -> Result<(T, Option<(usize, usize)>), E>,
) -> Result<(T, Option<(usize, usize)>), E> {
    match publish() {
        Ok((out, Some(_))) => Ok((out, Some((start, end)))),
        Ok((out, None)) => {
            finish(list, Some((start, end)));
            Ok((out, None))
        }
        Err(e) => {
            finish(list, Some((start, end)));
            Err(e)
        }
    }
}

/// After writer step 4: `range` (from [`publish`]) leaves the list; waiters wake.
pub(crate) fn finish<L: RetireList>(list: &L, range: Option<(usize, usize)>) {
    if let Some(r) = range {
        list.lock().remove(r);
        list.notify_all();
    }
}
