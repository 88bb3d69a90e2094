//! Shared mappings of whole files: anonymous shared memory (a memfd), and the named POSIX
//! segments of `SharedMemory`. A memfd travels to other processes as a descriptor (SCM_RIGHTS),
//! which map the same pages; it has no name, so nothing can leak: the memory is freed when the
//! last descriptor and mapping are gone, however processes die.
//!
//! A mapping whose file shrinks under it, or whose pages cannot be allocated when first touched,
//! kills the process with SIGBUS at the next access. So:
//! - every memfd is sealed against shrinking (`F_SEAL_SHRINK`, and `F_SEAL_SEAL` so that nobody
//!   adds a write seal later), and a received memfd is only mapped if it carries that seal;
//! - [`SharedRegion::create_reserved`] allocates every page at creation (`fallocate`), so that a
//!   full memory is an error there; [`SharedRegion::create`] stays sparse for memory that is
//!   deliberately mostly holes (the queue's ring), at the cost of that protection;
//! - a named segment cannot be sealed: [`SharedRegion::from_unsealed_fd`] maps it at its current
//!   size, and another process that opens the name can still shrink it later.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};

/// The seals every memfd of `mp` carries.
const SEALS: SealFlag = SealFlag::F_SEAL_SHRINK.union(SealFlag::F_SEAL_SEAL);

/// A shared mapping of a whole file.
#[derive(Debug)]
pub(crate) struct SharedRegion {
    fd: OwnedFd,
    map: Mapping,
}

/// A shared mapping whose file descriptor was given away ([`SharedRegion::into_mapping`]): the
/// memory stays mapped until this is dropped, without holding a descriptor.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping itself only holds the address of a shared mapping; it never dereferences
// the pointer. Every user of `as_ptr` states how its accesses are synchronized between threads
// and processes (atomics, copies made under a cross-process lock, or an `unsafe` contract of its
// caller), so moving or sharing the handle between threads adds nothing that sharing it between
// processes does not.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// The start of the mapping (page-aligned).
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The size in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The 8 bytes at `offset` as an atomic word (a word of a header the processes that map it
    /// share). Panics if they do not lie in the mapping or are not 8-aligned.
    pub(crate) fn atomic_u64(&self, offset: usize) -> &AtomicU64 {
        assert!(
            offset.checked_add(8).is_some_and(|end| end <= self.len) && offset.is_multiple_of(8)
        );
        // SAFETY: the 8 bytes lie inside the mapping, which lives as long as `&self`, and are
        // 8-aligned (the mapping is page-aligned); an AtomicU64 is valid for any bits, and the
        // users of a shared header access its words only atomically, in every process.
        unsafe { &*(self.as_ptr().add(offset) as *const AtomicU64) }
    }

    /// The 4 bytes at `offset` as an atomic word, as [`Mapping::atomic_u64`].
    pub(crate) fn atomic_u32(&self, offset: usize) -> &AtomicU32 {
        assert!(
            offset.checked_add(4).is_some_and(|end| end <= self.len) && offset.is_multiple_of(4)
        );
        // SAFETY: as in `atomic_u64`, for 4 bytes 4-aligned.
        unsafe { &*(self.as_ptr().add(offset) as *const AtomicU32) }
    }
}

impl SharedRegion {
    /// A new zero-filled memfd region of `len` bytes, sealed against shrinking. Its pages are
    /// allocated when first touched: if memory runs out then, the toucher gets SIGBUS (with
    /// strict overcommit) or the OOM killer. For memory that is meant to be sparse.
    pub(crate) fn create(name: &std::ffi::CStr, len: usize) -> io::Result<Self> {
        Self::create_memfd(name, len, false)
    }

    /// A new zero-filled memfd region of `len` bytes, sealed against shrinking, with every page
    /// allocated now: memory that cannot be had is an error here, not a SIGBUS later.
    pub(crate) fn create_reserved(name: &std::ffi::CStr, len: usize) -> io::Result<Self> {
        Self::create_memfd(name, len, true)
    }

    fn create_memfd(name: &std::ffi::CStr, len: usize, reserve: bool) -> io::Result<Self> {
        let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)?;
        let size = file_offset(len)?;
        nix::unistd::ftruncate(&fd, size)?;
        if reserve {
            reserve_pages(&fd, size)?;
        }
        fcntl(&fd, FcntlArg::F_ADD_SEALS(SEALS))?;
        Self::map(fd, len)
    }

    /// Maps a memfd received from another process, at its size. It must be sealed against
    /// shrinking (every memfd `mp` makes is), so that no process can cut the memory from under
    /// the mapping; anything else is an error of kind `InvalidData`.
    pub(crate) fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        // The seal first: once it is there the size can only grow, so the size read next stays
        // mapped for as long as the mapping lives.
        let seals = match fcntl(&fd, FcntlArg::F_GET_SEALS) {
            Ok(bits) => SealFlag::from_bits_truncate(bits),
            Err(Errno::EINVAL) => SealFlag::empty(),
            Err(e) => return Err(e.into()),
        };
        if !seals.contains(SealFlag::F_SEAL_SHRINK) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the descriptor received is not sealed against shrinking (F_SEAL_SHRINK), so \
                 another process could truncate it under the mapping; mp only maps its own \
                 sealed memfds",
            ));
        }
        let st = nix::sys::stat::fstat(&fd)?;
        Self::map(fd, st.st_size as usize)
    }

    /// Maps a file that cannot be sealed (a named POSIX shared-memory segment), at its current
    /// size. A process that can open the file may still shrink it later, and this process then
    /// gets SIGBUS at its next access beyond the new end.
    pub(crate) fn from_unsealed_fd(fd: OwnedFd) -> io::Result<Self> {
        let st = nix::sys::stat::fstat(&fd)?;
        Self::map(fd, st.st_size as usize)
    }

    fn map(fd: OwnedFd, len: usize) -> io::Result<Self> {
        let size = std::num::NonZeroUsize::new(len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty shared region"))?;
        // SAFETY: a fresh shared mapping of a file we own, at an address the kernel picks; it
        // aliases no Rust object. It is unmapped exactly once, in Drop.
        let ptr = unsafe {
            mmap(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                &fd,
                0,
            )
        }?;
        Ok(SharedRegion {
            fd,
            map: Mapping {
                ptr: ptr.cast(),
                len,
            },
        })
    }

    /// The start of the mapping (page-aligned).
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.map.as_ptr()
    }

    /// The size in bytes (of the file when it was mapped).
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// The mapping and the descriptor apart: for memory whose file is only needed to be sent
    /// once, so that the process does not keep a descriptor open for it.
    pub(crate) fn into_mapping(self) -> (Mapping, OwnedFd) {
        (self.map, self.fd)
    }

    /// The file's size now; smaller than [`len`](SharedRegion::len) only if another process
    /// shrank an unsealed file.
    pub(crate) fn current_len(&self) -> io::Result<usize> {
        Ok(nix::sys::stat::fstat(&self.fd)?.st_size as usize)
    }
}

/// A byte count as a file offset.
fn file_offset(len: usize) -> io::Result<i64> {
    i64::try_from(len).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "shared memory size does not fit a file offset",
        )
    })
}

/// Allocates every page of the first `size` bytes of a tmpfs file (`posix_fallocate`), so that a
/// full tmpfs or memory limit is `ENOSPC`/`ENOMEM` now rather than SIGBUS at a later write.
pub(crate) fn reserve_pages(fd: &impl AsFd, size: i64) -> io::Result<()> {
    loop {
        match nix::fcntl::posix_fallocate(fd, 0, size) {
            Ok(()) => return Ok(()),
            // A signal arrived during a long allocation: what is allocated stays; go on.
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

impl AsFd for SharedRegion {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe the mapping made in `map`, unmapped only here; no
        // reference into it outlives `self` (accessors borrow `self`).
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ftruncate(region: &SharedRegion, len: i64) -> nix::Result<()> {
        nix::unistd::ftruncate(region.as_fd(), len)
    }

    #[test]
    fn atomic_words_are_shared_and_only_inside_the_mapping() {
        let (map, fd) = SharedRegion::create(c"mp-test", 4096)
            .unwrap()
            .into_mapping();
        let other = SharedRegion::from_fd(fd).unwrap();
        let (other, _) = other.into_mapping();
        map.atomic_u64(4088)
            .store(7, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            other
                .atomic_u64(4088)
                .load(std::sync::atomic::Ordering::SeqCst),
            7
        );
        map.atomic_u32(8)
            .store(3, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            other
                .atomic_u64(8)
                .load(std::sync::atomic::Ordering::SeqCst),
            3
        );
        for (offset, width) in [
            (4096, 8),
            (4090, 8),
            (4, 8),
            (usize::MAX - 3, 8),
            (4094, 4),
            (2, 4),
        ] {
            let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match width {
                8 => drop(map.atomic_u64(offset)),
                _ => drop(map.atomic_u32(offset)),
            }));
            assert!(got.is_err(), "{width} bytes at {offset} were allowed");
        }
    }

    #[test]
    fn a_memfd_cannot_be_shrunk_but_may_grow() {
        for region in [
            SharedRegion::create(c"mp-test", 8192).unwrap(),
            SharedRegion::create_reserved(c"mp-test", 8192).unwrap(),
        ] {
            assert_eq!(ftruncate(&region, 0), Err(Errno::EPERM));
            assert_eq!(ftruncate(&region, 4096), Err(Errno::EPERM));
            // Nobody can add a seal either (a write seal would break later mappings).
            assert_eq!(
                fcntl(
                    region.as_fd(),
                    FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_FUTURE_WRITE)
                ),
                Err(Errno::EPERM)
            );
            assert_eq!(region.current_len().unwrap(), 8192);
            ftruncate(&region, 16384).unwrap();
            assert_eq!(region.len(), 8192);
        }
    }

    #[test]
    fn punching_holes_is_not_shrinking() {
        // The queue frees the pages of consumed messages this way.
        let region = SharedRegion::create(c"mp-test", 1 << 20).unwrap();
        // SAFETY: the mapping is 1 MiB and only this test uses it.
        unsafe { region.as_ptr().add(8192).write_bytes(7, 4096) };
        nix::fcntl::fallocate(
            region.as_fd(),
            nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
                | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
            8192,
            4096,
        )
        .unwrap();
        // SAFETY: as above; a punched page reads back as zeros.
        assert_eq!(unsafe { region.as_ptr().add(8192).read() }, 0);
        assert_eq!(region.current_len().unwrap(), 1 << 20);
    }

    #[test]
    fn a_reserved_region_has_its_pages_allocated() {
        let region = SharedRegion::create_reserved(c"mp-test", 1 << 20).unwrap();
        let st = nix::sys::stat::fstat(region.as_fd()).unwrap();
        assert!(st.st_blocks * 512 >= 1 << 20, "{} blocks", st.st_blocks);
        let sparse = SharedRegion::create(c"mp-test", 1 << 20).unwrap();
        assert_eq!(nix::sys::stat::fstat(sparse.as_fd()).unwrap().st_blocks, 0);
    }

    #[test]
    fn a_received_memfd_must_be_sealed() {
        let sealed = SharedRegion::create(c"mp-test", 4096).unwrap();
        let dup = sealed.as_fd().try_clone_to_owned().unwrap();
        assert_eq!(SharedRegion::from_fd(dup).unwrap().len(), 4096);

        let unsealed = memfd_create(c"mp-test", MFdFlags::MFD_CLOEXEC).unwrap();
        nix::unistd::ftruncate(&unsealed, 4096).unwrap();
        let err = SharedRegion::from_fd(unsealed).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("F_SEAL_SHRINK"), "{err}");

        // Sealing allowed but not done: refused too.
        let unsealed = memfd_create(c"mp-test", MFdFlags::MFD_ALLOW_SEALING).unwrap();
        nix::unistd::ftruncate(&unsealed, 4096).unwrap();
        assert!(SharedRegion::from_fd(unsealed).is_err());
    }
}
