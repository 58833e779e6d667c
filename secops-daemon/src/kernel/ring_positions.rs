//! Where the ring buffer's consumer and producer are: the two counters at the start of the
//! ring buffer map's first two pages, as the kernel keeps them (bytes, monotonic for the
//! map's life). A daemon that starts a new decision epoch reads the producer's position once
//! no program can still write an event of the old epoch, and knows it has read every such
//! event when the consumer has got there.

use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use secops_common::kernel::MAP_EVENTS;

use super::error::{KernelError, Result};

/// Read-only mappings of the consumer and producer pages of a ring buffer map.
pub(crate) struct RingPositions {
    consumer: NonNull<libc::c_void>,
    producer: NonNull<libc::c_void>,
    page: usize,
}

// SAFETY: the mappings are read through atomics only, and live as long as this value.
unsafe impl Send for RingPositions {}

impl RingPositions {
    /// Maps the position pages of the ring buffer map `fd`.
    pub(crate) fn map(fd: RawFd) -> Result<RingPositions> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let consumer = map_page(fd, 0, page)?;
        let producer = match map_page(fd, page, page) {
            Ok(p) => p,
            Err(e) => {
                // SAFETY: the mapping just made, unmapped once.
                unsafe { libc::munmap(consumer.as_ptr(), page) };
                return Err(e);
            }
        };
        Ok(RingPositions {
            consumer,
            producer,
            page,
        })
    }

    /// Bytes the reader has consumed, ever.
    pub(crate) fn consumed(&self) -> u64 {
        read(self.consumer)
    }

    /// Bytes the programs have reserved, ever (submitted or not yet).
    pub(crate) fn produced(&self) -> u64 {
        read(self.producer)
    }
}

fn map_page(fd: RawFd, offset: usize, page: usize) -> Result<NonNull<libc::c_void>> {
    let offset = libc::off_t::try_from(offset).unwrap_or(0);
    // SAFETY: a new shared read-only mapping of one page of a ring buffer map's fd; the
    // kernel lets anyone who holds the fd map the position pages so.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            page,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd,
            offset,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(KernelError::MapSyscall {
            map: MAP_EVENTS,
            action: "mapping the ring buffer's positions",
            source: std::io::Error::last_os_error(),
        });
    }
    NonNull::new(ptr).ok_or_else(|| KernelError::MapSyscall {
        map: MAP_EVENTS,
        action: "mapping the ring buffer's positions",
        source: std::io::Error::other("mmap returned NULL"),
    })
}

fn read(page: NonNull<libc::c_void>) -> u64 {
    // SAFETY: the page is mapped for as long as `self` lives, is page-aligned, and its first
    // eight bytes are the kernel's unsigned long position, written atomically.
    unsafe { (*page.as_ptr().cast::<AtomicU64>()).load(Ordering::Acquire) }
}

impl Drop for RingPositions {
    fn drop(&mut self) {
        // SAFETY: the mappings made in `map`, each unmapped once.
        unsafe {
            libc::munmap(self.consumer.as_ptr(), self.page);
            libc::munmap(self.producer.as_ptr(), self.page);
        }
    }
}
