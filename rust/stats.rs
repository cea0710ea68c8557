// SPDX-License-Identifier: GPL-2.0

//! Per-CPU event counters of one address space.
//!
//! Counting must not itself add a write to a cache line that all faulting CPUs share,
//! or it would distort the very number it reports. Each CPU gets its own cache-line
//! aligned block; an increment is a relaxed atomic add to the current CPU's block (the
//! atomic only matters when a thread is preempted and migrates between reading the CPU
//! id and adding, which stays correct, merely rarely shared). Readers sum all blocks.

#![deny(unsafe_code)]

use crate::uapi::VMALAB_NR_COUNTERS;
use kernel::{
    cpu::{nr_cpu_ids, CpuId},
    prelude::*,
    sync::atomic::{Atomic, Relaxed},
};

/// One CPU's counters, on cache lines of their own.
#[repr(C, align(64))]
struct CpuBlock([Atomic<u64>; VMALAB_NR_COUNTERS]);

/// Event counters, indexed by the `VMALAB_CTR_*` constants of the UAPI.
pub(crate) struct Stats {
    cpus: KVec<CpuBlock>,
}

impl Stats {
    /// Allocates zeroed counters for every possible CPU.
    pub(crate) fn new() -> Result<Self> {
        let n = nr_cpu_ids() as usize;
        let mut cpus = KVec::with_capacity(n, GFP_KERNEL_ACCOUNT)?;
        for _ in 0..n {
            cpus.push(
                CpuBlock([const { Atomic::new(0) }; VMALAB_NR_COUNTERS]),
                GFP_KERNEL,
            )?;
        }
        Ok(Self { cpus })
    }

    /// Adds `n` to counter `ctr` on the current CPU's block.
    #[inline]
    pub(crate) fn add(&self, ctr: usize, n: u64) {
        let cpu = CpuId::current().as_u32() as usize;
        if let Some(block) = self.cpus.get(cpu) {
            if let Some(c) = block.0.get(ctr) {
                c.add(n, Relaxed);
            }
        }
    }

    /// Adds one to counter `ctr`.
    #[inline]
    pub(crate) fn inc(&self, ctr: usize) {
        self.add(ctr, 1);
    }

    /// Returns all counters summed over CPUs (a racy but monotonic snapshot).
    pub(crate) fn snapshot(&self) -> [u64; VMALAB_NR_COUNTERS] {
        let mut out = [0u64; VMALAB_NR_COUNTERS];
        for block in self.cpus.iter() {
            for (o, c) in out.iter_mut().zip(block.0.iter()) {
                *o = o.wrapping_add(c.load(Relaxed));
            }
        }
        out
    }
}
