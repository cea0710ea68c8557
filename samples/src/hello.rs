//! The smallest complete user of `/dev/vmalab`: open an address space, map the arena,
//! create a region, touch it, replace it, make part of it read-only, cut a hole in
//! it, look at the counters, and unmap it.
//!
//! Run it in the test VM: `tools/vm exec -- target/release/vmalab-hello`

use vmalab::{uapi, Device, PAGE_SIZE};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arena_size = 16 << 20;
    // One open file = one address space. Choose the engine before the first mmap.
    let rwsem = vmalab::engine("rwsem").expect("rwsem is always built");
    let dev = Device::with_engine(rwsem, arena_size)?;
    let arena = dev
        .mmap_arena(arena_size)
        .map_err(std::io::Error::from_raw_os_error)?;

    // A region of 8 pages wherever the allocator puts it (like mmap(NULL, ...)).
    let len = 8 * PAGE_SIZE;
    let off = dev.map(len).map_err(std::io::Error::from_raw_os_error)?;
    println!(
        "region at arena offset {off:#x}, address {:p}",
        arena.at(off)
    );

    // Touch it: the first write to each page faults it in (a zeroed page).
    let region = arena.at(off);
    // SAFETY: [off, off+len) is a live region of our arena.
    unsafe { region.write_bytes(0xAB, len) };
    // SAFETY: as above.
    let first = unsafe { region.read() };
    println!("first byte after the write: {first:#x}");

    // Replace it (like mmap(MAP_FIXED)): once the ioctl returns the old pages are gone.
    dev.map_at(off, len, true)
        .map_err(std::io::Error::from_raw_os_error)?;
    // SAFETY: still a live region (the new one).
    let after = unsafe { region.read() };
    println!("first byte after replace: {after:#x}");

    // mprotect: the middle two pages read-only. The region splits in three; a write
    // there now raises SIGSEGV, a read still works.
    vmalab::probe::install();
    dev.protect(off + 3 * PAGE_SIZE, 2 * PAGE_SIZE, uapi::VMALAB_PROT_READ)
        .map_err(std::io::Error::from_raw_os_error)?;
    // SAFETY: inside our arena (device memory, never a Rust object).
    let w = unsafe { vmalab::probe::store(arena.at(off + 3 * PAGE_SIZE).cast(), 1) };
    let r = vmalab::probe::load(arena.at(off + 3 * PAGE_SIZE).cast());
    println!("read-only page: store {w:?}, load {r:?}");
    // munmap of one page in the middle: the parts around it keep their data.
    // SAFETY: page 6 of the region is read-write and ours.
    unsafe { region.add(6 * PAGE_SIZE).write(0x66) };
    dev.unmap(off + 5 * PAGE_SIZE, PAGE_SIZE)
        .map_err(std::io::Error::from_raw_os_error)?;
    let kept = vmalab::probe::load(arena.at(off + 6 * PAGE_SIZE).cast());
    let hole = vmalab::probe::load(arena.at(off + 5 * PAGE_SIZE).cast());
    println!("after cutting page 5 out: page 6 reads {kept:x?}, page 5 {hole:?}");

    let info = dev.info().map_err(std::io::Error::from_raw_os_error)?;
    println!(
        "engine {} | {} region(s) | {} page(s) | {} B of region bookkeeping",
        uapi::engine_name(info.engine).unwrap_or("?"),
        info.regions,
        info.pages,
        info.meta_bytes
    );
    for (name, value) in uapi::COUNTER_NAMES.iter().zip(info.counters) {
        if value != 0 {
            println!("  {name:>14} {value}");
        }
    }

    // Unmap: an access now raises SIGBUS (the arena is still there, the region is not).
    dev.unmap(off, len)
        .map_err(std::io::Error::from_raw_os_error)?;
    let r = vmalab::probe::load(region.cast());
    println!("load after unmap: {r:?}");
    Ok(())
}
