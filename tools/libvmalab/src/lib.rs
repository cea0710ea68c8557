//! User-space access to `/dev/vmalab`.
//!
//! - [`uapi`]: the ABI, compiled from the module's own `rust/uapi.rs` (one definition).
//! - [`Device`]: one open file = one address space, with safe wrappers for every ioctl
//!   and the arena `mmap`.
//! - [`probe`]: loads and stores that survive `SIGBUS`/`SIGSEGV` and report them, so
//!   tests can race accesses against unmaps without dying.

#[path = "../../../rust/uapi.rs"]
#[allow(dead_code)]
pub mod uapi;

pub mod probe;

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    ptr::NonNull,
};

/// The device node.
pub const DEVICE_PATH: &str = "/dev/vmalab";

/// The page size the module uses (x86-64).
pub const PAGE_SIZE: usize = 4096;

/// An engine and its configuration flags, as benchmarks and tests name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineSpec {
    /// `VMALAB_ENGINE_*` id.
    pub id: u32,
    /// `VMALAB_CONFIG_*` flags.
    pub flags: u32,
    /// Display name (`rcu+exp` is `rcu` with `VMALAB_CONFIG_EXPEDITED`, `rcu+def` is
    /// `rcu` with `VMALAB_CONFIG_DEFERRED`, `percpu+sem` is `percpu` with
    /// `VMALAB_CONFIG_KERNEL_LOCK`, `spf+region` is `spf` with
    /// `VMALAB_CONFIG_REGION_SEQ`, `ptshard+pcpu` is `ptshard` with
    /// `VMALAB_CONFIG_CPU_CACHE`).
    pub name: &'static str,
}

/// Every engine this build of the UAPI knows, plus the configurations worth comparing.
pub fn engines() -> Vec<EngineSpec> {
    let mut v: Vec<EngineSpec> = (1..uapi::VMALAB_ENGINE_END)
        .filter_map(|id| uapi::engine_name(id).map(|name| EngineSpec { id, flags: 0, name }))
        .collect();
    let configurations = [
        (
            uapi::VMALAB_ENGINE_RCU,
            uapi::VMALAB_CONFIG_EXPEDITED,
            "rcu+exp",
        ),
        (
            uapi::VMALAB_ENGINE_RCU,
            uapi::VMALAB_CONFIG_DEFERRED,
            "rcu+def",
        ),
        (
            uapi::VMALAB_ENGINE_SPF,
            uapi::VMALAB_CONFIG_REGION_SEQ,
            "spf+region",
        ),
        (
            uapi::VMALAB_ENGINE_PERCPU,
            uapi::VMALAB_CONFIG_KERNEL_LOCK,
            "percpu+sem",
        ),
        (
            uapi::VMALAB_ENGINE_PTSHARD,
            uapi::VMALAB_CONFIG_CPU_CACHE,
            "ptshard+pcpu",
        ),
    ];
    for (id, flags, name) in configurations {
        let at = v.iter().position(|e| e.id == id).map_or(v.len(), |i| i + 1);
        v.insert(at, EngineSpec { id, flags, name });
    }
    v
}

/// The name of the configuration with engine `id` and `flags` (`None`: not one of
/// [`engines`]).
pub fn engine_spec_name(id: u32, flags: u32) -> Option<&'static str> {
    engines()
        .into_iter()
        .find(|e| e.id == id && e.flags == flags)
        .map(|e| e.name)
}

/// Looks an engine configuration up by name.
pub fn engine(name: &str) -> Option<EngineSpec> {
    engines().into_iter().find(|e| e.name == name)
}

/// One open file of `/dev/vmalab`: one address space.
#[derive(Debug)]
pub struct Device {
    fd: OwnedFd,
}

/// Result of an ioctl: `Err` carries the errno.
pub type Errno = i32;

fn errno() -> Errno {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

impl Device {
    /// Opens `/dev/vmalab`.
    pub fn open() -> io::Result<Self> {
        let path = CString::new(DEVICE_PATH).expect("no NUL in path");
        // SAFETY: `path` is a valid C string.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a freshly opened descriptor we own.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Opens the device and configures engine and arena size.
    pub fn with_engine(engine: EngineSpec, arena_size: usize) -> io::Result<Self> {
        Self::with_config(engine.id, engine.flags, arena_size)
    }

    /// Opens the device and configures engine, `VMALAB_CONFIG_*` flags and arena size.
    pub fn with_config(engine: u32, flags: u32, arena_size: usize) -> io::Result<Self> {
        let d = Self::open()?;
        d.config_flags(engine, flags, arena_size as u64)
            .map_err(io::Error::from_raw_os_error)?;
        Ok(d)
    }

    /// The raw descriptor.
    pub fn fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Issues ioctl `cmd` with a pointer argument (or any raw value).
    pub fn ioctl_raw(&self, cmd: u32, arg: usize) -> Result<i64, Errno> {
        // SAFETY: The kernel validates `arg`; a bad pointer yields EFAULT, not UB here,
        // as long as callers pass pointers to objects of the size `cmd` encodes.
        let r = unsafe { libc::ioctl(self.fd(), cmd as libc::c_ulong, arg) };
        if r < 0 {
            Err(errno())
        } else {
            Ok(r as i64)
        }
    }

    /// `VMALAB_IOC_CONFIG` with no flags.
    pub fn config(&self, engine: u32, arena_size: u64) -> Result<(), Errno> {
        self.config_flags(engine, 0, arena_size)
    }

    /// `VMALAB_IOC_CONFIG`.
    pub fn config_flags(&self, engine: u32, flags: u32, arena_size: u64) -> Result<(), Errno> {
        let mut c = uapi::VmalabConfig {
            engine,
            flags,
            arena_size,
        };
        self.ioctl_raw(uapi::VMALAB_IOC_CONFIG, &mut c as *mut _ as usize)
            .map(drop)
    }

    /// `VMALAB_IOC_MAP` with a full argument; returns the region's offset.
    pub fn map_args(&self, mut m: uapi::VmalabMap) -> Result<u64, Errno> {
        self.ioctl_raw(uapi::VMALAB_IOC_MAP, &mut m as *mut _ as usize)?;
        Ok(m.offset)
    }

    /// Maps a zero-filled region anywhere; returns its offset.
    pub fn map(&self, length: usize) -> Result<usize, Errno> {
        self.map_args(uapi::VmalabMap {
            length: length as u64,
            ..Default::default()
        })
        .map(|o| o as usize)
    }

    /// Maps a zero-filled region at `offset` (`FIXED`, or `REPLACE` if `replace`).
    pub fn map_at(&self, offset: usize, length: usize, replace: bool) -> Result<usize, Errno> {
        let flags = if replace {
            uapi::VMALAB_MAP_REPLACE
        } else {
            uapi::VMALAB_MAP_FIXED
        };
        self.map_args(uapi::VmalabMap {
            offset: offset as u64,
            length: length as u64,
            flags,
            ..Default::default()
        })
        .map(|o| o as usize)
    }

    /// Maps a slow-backed region anywhere (first touch of a page sleeps `delay_us`).
    pub fn map_slow(&self, length: usize, delay_us: u32) -> Result<usize, Errno> {
        self.map_args(uapi::VmalabMap {
            length: length as u64,
            backing: uapi::VMALAB_BACKING_SLOW,
            delay_us,
            ..Default::default()
        })
        .map(|o| o as usize)
    }

    /// `VMALAB_IOC_UNMAP`.
    pub fn unmap(&self, offset: usize, length: usize) -> Result<(), Errno> {
        let mut u = uapi::VmalabUnmap {
            offset: offset as u64,
            length: length as u64,
        };
        self.ioctl_raw(uapi::VMALAB_IOC_UNMAP, &mut u as *mut _ as usize)
            .map(drop)
    }

    /// `VMALAB_IOC_PROTECT`: `prot` is `VMALAB_PROT_READ` or `VMALAB_PROT_READ_WRITE`.
    pub fn protect(&self, offset: usize, length: usize, prot: u32) -> Result<(), Errno> {
        let mut p = uapi::VmalabProtect {
            offset: offset as u64,
            length: length as u64,
            prot,
            reserved: 0,
        };
        self.ioctl_raw(uapi::VMALAB_IOC_PROTECT, &mut p as *mut _ as usize)
            .map(drop)
    }

    /// `VMALAB_IOC_TEST_HOOKS` (module loaded with `test_hooks=1`): arms protocol
    /// mutants (`VMALAB_MUTANT_*`) and the hold-release delay in this address space.
    pub fn test_hooks(&self, mutants: u32, release_delay_us: u32) -> Result<(), Errno> {
        self.set_test_hooks(uapi::VmalabTestHooks {
            mutants,
            release_delay_us,
            ..Default::default()
        })
    }

    /// `VMALAB_IOC_TEST_HOOKS` with every field given.
    pub fn set_test_hooks(&self, mut h: uapi::VmalabTestHooks) -> Result<(), Errno> {
        self.ioctl_raw(uapi::VMALAB_IOC_TEST_HOOKS, &mut h as *mut _ as usize)
            .map(drop)
    }

    /// `VMALAB_IOC_SYNC`: waits until what writers handed to deferred reclaim has been
    /// freed (`spf`, `rcu+def`; returns at once for the other engines).
    pub fn sync(&self) -> Result<(), Errno> {
        self.ioctl_raw(uapi::VMALAB_IOC_SYNC, 0).map(drop)
    }

    /// `VMALAB_IOC_INFO`.
    pub fn info(&self) -> Result<uapi::VmalabInfo, Errno> {
        let mut i = uapi::VmalabInfo::default();
        self.ioctl_raw(uapi::VMALAB_IOC_INFO, &mut i as *mut _ as usize)?;
        Ok(i)
    }

    /// `mmap`s the arena (`MAP_SHARED`, read/write).
    pub fn mmap_arena(&self, size: usize) -> Result<Arena, Errno> {
        self.mmap_raw(size, libc::MAP_SHARED, 0)
    }

    /// `mmap` with explicit flags and offset (for the bad-input tests).
    pub fn mmap_raw(&self, size: usize, flags: i32, offset: i64) -> Result<Arena, Errno> {
        // SAFETY: A fresh mapping chosen by the kernel; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                self.fd(),
                offset,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(errno());
        }
        Ok(Arena {
            base: NonNull::new(p.cast()).expect("mmap returned NULL"),
            size,
        })
    }
}

/// The arena mapping; unmapped on drop.
#[derive(Debug)]
pub struct Arena {
    base: NonNull<u8>,
    size: usize,
}

// SAFETY: The arena is plain shared memory; all accesses go through raw pointers
// (and usually through `probe`), so sharing the handle between threads is fine.
unsafe impl Send for Arena {}
// SAFETY: As above.
unsafe impl Sync for Arena {}

impl Arena {
    /// The first byte of the arena.
    pub fn base(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// Size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Address of byte `offset` of the arena.
    pub fn at(&self, offset: usize) -> *mut u8 {
        assert!(offset < self.size, "offset {offset:#x} outside the arena");
        self.base.as_ptr().wrapping_add(offset)
    }

    /// Loads the word at arena byte `offset`, reporting SIGBUS/SIGSEGV instead of dying
    /// (see [`probe`]; call [`probe::install`] first).
    pub fn load(&self, offset: usize) -> Result<u64, probe::Fault> {
        probe::load(self.at(offset).cast())
    }

    /// Stores `v` at arena byte `offset`, reporting SIGBUS/SIGSEGV instead of dying.
    pub fn store(&self, offset: usize, v: u64) -> Result<(), probe::Fault> {
        // SAFETY: The address is inside our arena mapping (checked by `at`), which is
        // device memory this process may write; it is never a Rust object.
        unsafe { probe::store(self.at(offset).cast(), v) }
    }

    /// Detaches the mapping so it is not unmapped on drop.
    pub fn leak(self) -> (*mut u8, usize) {
        let r = (self.base.as_ptr(), self.size);
        std::mem::forget(self);
        r
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: We own this mapping.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.size) };
    }
}

/// The errno name for messages.
pub fn errno_name(e: Errno) -> String {
    let name = match e {
        libc::EINVAL => "EINVAL",
        libc::ENOENT => "ENOENT",
        libc::EEXIST => "EEXIST",
        libc::EBUSY => "EBUSY",
        libc::ENOMEM => "ENOMEM",
        libc::EFAULT => "EFAULT",
        libc::ENOTTY => "ENOTTY",
        libc::EPERM => "EPERM",
        libc::ENODEV => "ENODEV",
        0 => "OK",
        _ => return format!("errno {e}"),
    };
    name.to_string()
}
