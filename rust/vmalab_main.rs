// SPDX-License-Identifier: GPL-2.0

//! vmalab: a laboratory for address-space locking designs.
//!
//! `/dev/vmalab`: each open file is one address space; `mmap` creates its arena;
//! ioctls create and destroy regions (vmalab's own VMAs) inside it; faults in the arena
//! are resolved by the selected *engine*. See `README.md` for the model and
//! `engine.rs` for the engine contract.
//!
//! Files, top-down: `vmalab_main.rs` (module, misc device, ioctl decoding) →
//! `space.rs` (one address space) → `engine.rs` + `engine/*.rs` (one per design) →
//! `region.rs` / `backing.rs` / `pages.rs` (regions and their pages). `vm_ops.rs` is
//! the arena's `vm_operations_struct`; `rwsem.rs` wraps `struct rw_semaphore`;
//! `stats.rs` holds per-CPU counters; `uapi.rs` is the ABI shared with user space.

mod backing;
mod deferred;
mod engine;
mod free_space;
mod pages;
mod percpu_rw;
mod percpu_rwsem;
mod pi_rw;
mod protocol;
mod range_lock;
mod rcu_tree;
mod region;
mod rwsem;
mod space;
mod stats;
pub mod uapi;
mod vm_ops;

use kernel::{
    fs::File,
    miscdevice::{MiscDevice, MiscDeviceOptions, MiscDeviceRegistration},
    mm::virt::VmaNew,
    prelude::*,
    sync::{Arc, ArcBorrow},
    transmute::{AsBytes, FromBytes},
    uaccess::{UserPtr, UserSlice},
};
use space::Space;

module! {
    type: VmalabModule,
    name: "vmalab",
    authors: ["vmalab developers"],
    description: "Address-space locking laboratory: engines behind one fault path",
    license: "GPL",
    params: {
        engine: u32 {
            default: 1,
            description: "Default engine id for new address spaces (1=rwsem)",
        },
        test_hooks: bool {
            default: false,
            description: "Enable test-only ioctls (VMALAB_IOC_TEST_WARN)",
        },
    },
}

// SAFETY: Plain `#[repr(C)]` structs of integers with no padding (sizes are multiples
// of 8 with fields in decreasing alignment); every bit pattern is valid.
unsafe impl FromBytes for uapi::VmalabConfig {}
// SAFETY: As above.
unsafe impl FromBytes for uapi::VmalabMap {}
// SAFETY: As above; no padding, so no uninitialised bytes are exposed.
unsafe impl AsBytes for uapi::VmalabMap {}
// SAFETY: As above.
unsafe impl FromBytes for uapi::VmalabUnmap {}
// SAFETY: As above.
unsafe impl FromBytes for uapi::VmalabProtect {}
// SAFETY: As above.
unsafe impl FromBytes for uapi::VmalabTestHooks {}
// SAFETY: As above; no padding, so no uninitialised bytes are exposed.
unsafe impl AsBytes for uapi::VmalabInfo {}

#[pin_data]
struct VmalabModule {
    /// Dropped first: no file can be opened once it is gone (and none is open).
    #[pin]
    _miscdev: MiscDeviceRegistration<VmalabDevice>,
    /// Dropped last: waits for every deferred-reclaim work item to finish.
    _reclaim: deferred::ReclaimQueue,
}

impl kernel::InPlaceModule for VmalabModule {
    fn init(_module: &'static ThisModule) -> impl PinInit<Self, Error> {
        let options = MiscDeviceOptions { name: c"vmalab" };
        try_pin_init!(Self {
            // Before the device exists, so that every space can queue work.
            _reclaim: deferred::ReclaimQueue::new()?,
            _miscdev <- MiscDeviceRegistration::register(options),
        })
    }
}

/// The misc device; each open file gets its own [`Space`].
struct VmalabDevice;

#[vtable]
impl MiscDevice for VmalabDevice {
    type Ptr = Arc<Space>;

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<Arc<Space>> {
        let id = module_parameters::engine.value();
        uapi::engine_name(id).ok_or(EINVAL)?;
        Space::new(id)
    }

    fn release(space: Arc<Space>, _file: &File) {
        space.release();
    }

    fn mmap(space: ArcBorrow<'_, Space>, _file: &File, vma: &VmaNew) -> Result {
        Space::mmap(space, vma)
    }

    fn ioctl(space: ArcBorrow<'_, Space>, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        let slice = || UserSlice::new(UserPtr::from_addr(arg), kernel::ioctl::_IOC_SIZE(cmd));
        let user = slice();
        match cmd {
            uapi::VMALAB_IOC_CONFIG => space.config(&user.reader().read()?)?,
            uapi::VMALAB_IOC_MAP => {
                let mut m: uapi::VmalabMap = user.reader().read()?;
                // Write the argument back unchanged first: an argument the caller
                // cannot write fails here, before anything changes.
                slice().writer().write(&m)?;
                Space::map(space, &mut m)?;
                // If this write fails now (the argument was unmapped meanwhile), the
                // region stands, as a successful mmap does (see `uapi.rs`): undoing
                // it by offset could remove a region another thread put there since.
                slice().writer().write(&m)?;
            }
            uapi::VMALAB_IOC_UNMAP => Space::unmap(space, &user.reader().read()?)?,
            uapi::VMALAB_IOC_PROTECT => Space::protect(space, &user.reader().read()?)?,
            uapi::VMALAB_IOC_SYNC => space.sync()?,
            uapi::VMALAB_IOC_INFO => user.writer().write(&space.info())?,
            uapi::VMALAB_IOC_TEST_HOOKS => {
                if !module_parameters::test_hooks.value() {
                    return Err(EPERM);
                }
                space.test_hooks(&user.reader().read()?)?
            }
            uapi::VMALAB_IOC_TEST_WARN => {
                if !module_parameters::test_hooks.value() {
                    return Err(EPERM);
                }
                kernel::warn_on!(true);
            }
            _ => return Err(ENOTTY),
        }
        Ok(0)
    }
}
