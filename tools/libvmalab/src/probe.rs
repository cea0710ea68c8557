//! Memory accesses that report `SIGBUS`/`SIGSEGV` instead of dying.
//!
//! The kernel's exception-table idea, in user space: each probe is a tiny assembly
//! routine with one labelled access instruction. A process-wide signal handler checks
//! whether the faulting instruction is one of those labels; if so it resumes at the
//! routine's exit with the signal number in the result register, otherwise it restores
//! the default action so the signal kills the process as usual. This works from any
//! number of threads at once, needs no `fork`, and costs a call per access.

use std::sync::Once;

std::arch::global_asm!(
    ".text",
    ".globl vmalab_probe_load",
    ".type vmalab_probe_load, @function",
    "vmalab_probe_load:",
    "    xor edx, edx",
    ".globl vmalab_probe_load_insn",
    "vmalab_probe_load_insn:",
    "    mov rax, qword ptr [rdi]",
    ".globl vmalab_probe_load_end",
    "vmalab_probe_load_end:",
    "    ret",
    ".size vmalab_probe_load, . - vmalab_probe_load",
    ".globl vmalab_probe_store",
    ".type vmalab_probe_store, @function",
    "vmalab_probe_store:",
    "    xor eax, eax",
    ".globl vmalab_probe_store_insn",
    "vmalab_probe_store_insn:",
    "    mov qword ptr [rdi], rsi",
    ".globl vmalab_probe_store_end",
    "vmalab_probe_store_end:",
    "    ret",
    ".size vmalab_probe_store, . - vmalab_probe_store",
);

/// What the load probe returns in `rax:rdx`.
#[repr(C)]
struct LoadRet {
    value: u64,
    signal: u64,
}

extern "C" {
    fn vmalab_probe_load(p: *const u64) -> LoadRet;
    fn vmalab_probe_store(p: *mut u64, v: u64) -> u64;
    static vmalab_probe_load_insn: u8;
    static vmalab_probe_load_end: u8;
    static vmalab_probe_store_insn: u8;
    static vmalab_probe_store_end: u8;
}

/// Why an access failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `SIGBUS`: the arena has no region there (or the page could not be produced).
    Bus,
    /// `SIGSEGV`: not mapped at all (e.g. the arena is gone).
    Segv,
}

fn fault_of(sig: u64) -> Fault {
    if sig == libc::SIGBUS as u64 {
        Fault::Bus
    } else {
        Fault::Segv
    }
}

extern "C" fn handler(sig: libc::c_int, _info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: With SA_SIGINFO the kernel passes a valid `ucontext_t` as `ctx`.
    let uc = unsafe { &mut *ctx.cast::<libc::ucontext_t>() };
    let gregs = &mut uc.uc_mcontext.gregs;
    let rip = gregs[libc::REG_RIP as usize] as usize;
    // SAFETY: Only the addresses of the labels are taken.
    let (load_insn, load_end, store_insn, store_end) = unsafe {
        (
            &vmalab_probe_load_insn as *const u8 as usize,
            &vmalab_probe_load_end as *const u8 as usize,
            &vmalab_probe_store_insn as *const u8 as usize,
            &vmalab_probe_store_end as *const u8 as usize,
        )
    };
    if rip == load_insn {
        gregs[libc::REG_RIP as usize] = load_end as i64;
        gregs[libc::REG_RDX as usize] = sig as i64;
    } else if rip == store_insn {
        gregs[libc::REG_RIP as usize] = store_end as i64;
        gregs[libc::REG_RAX as usize] = sig as i64;
    } else {
        // A real crash: restore the default action and return; the faulting
        // instruction runs again and the signal kills us with a core as usual.
        // SAFETY: `signal` is async-signal-safe.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
}

/// Installs the process-wide handler (idempotent).
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for sig in [libc::SIGBUS, libc::SIGSEGV] {
            // SAFETY: A zeroed `sigaction` is valid; we set handler and flags.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = handler as *const () as usize;
                sa.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER;
                libc::sigemptyset(&mut sa.sa_mask);
                assert_eq!(libc::sigaction(sig, &sa, std::ptr::null_mut()), 0);
            }
        }
    });
}

/// Loads the `u64` at `p`, or reports the signal the access raised.
///
/// `p` should be 8-byte aligned. Any address is allowed: that is the point, and the
/// read happens inside the assembly routine, outside Rust's memory model.
#[inline]
#[expect(
    clippy::not_unsafe_ptr_arg_deref,
    reason = "a faulting read is reported, not UB"
)]
pub fn load(p: *const u64) -> Result<u64, Fault> {
    // SAFETY: The routine performs one load; a fault is turned into a return value by
    // the handler that `install` set up.
    let r = unsafe { vmalab_probe_load(p) };
    if r.signal == 0 {
        Ok(r.value)
    } else {
        Err(fault_of(r.signal))
    }
}

/// Stores `v` at `p`, or reports the signal the access raised.
///
/// # Safety
///
/// If `p` is mapped, it must be memory the caller may write (e.g. the arena); a store
/// into the process's own live objects would corrupt them.
#[inline]
pub unsafe fn store(p: *mut u64, v: u64) -> Result<(), Fault> {
    // SAFETY: As for `load`, with one store.
    let sig = unsafe { vmalab_probe_store(p, v) };
    if sig == 0 {
        Ok(())
    } else {
        Err(fault_of(sig))
    }
}
