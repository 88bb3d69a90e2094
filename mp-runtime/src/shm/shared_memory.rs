//! `SharedMemory`: a named POSIX shared-memory segment (`/dev/shm/<name>`).

use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{atomic_copy, tracker};
use crate::codec;
use crate::connection::{FdOwned, FdRef};
use crate::error::{Error, Result};
use crate::sys::mmap::{SharedRegion, reserve_pages};

/// Longest name accepted (the kernel's NAME_MAX for a file in `/dev/shm`).
const MAX_NAME: usize = 255;

/// A named block of shared memory (Python's `multiprocessing.shared_memory.SharedMemory`).
///
/// [`create`](SharedMemory::create) makes a segment with a fresh name (prefixed `mp-`);
/// [`create_named`](SharedMemory::create_named) uses yours; [`open`](SharedMemory::open)
/// attaches to an existing one by name, from any process, `mp` or not.
///
/// Who removes the name: the handle that created the segment unlinks it when dropped (or at
/// [`unlink`](SharedMemory::unlink)); if its process is killed first, a resource tracker process
/// unlinks it. Handles that attached by name, or received the segment as a worker argument,
/// never unlink it implicitly (Python's tracker unlinks segments that attachers exit with,
/// gh-82300). Memory stays mapped in every process that has it until its handles are dropped.
///
/// Passing a `SharedMemory` to a worker sends its descriptor: the child maps the same memory
/// even if the name was unlinked meanwhile.
///
/// Concurrent use: [`read_at`](SharedMemory::read_at) and [`write_at`](SharedMemory::write_at)
/// copy byte by byte with atomic accesses, so any threads and processes may call them at once
/// without undefined behaviour (a read racing with a write may see some bytes of each); the
/// slice views are `unsafe` because they are plain references, which no other thread or
/// process may write while they live.
///
/// Size: [`create`](SharedMemory::create) allocates every page at once, so a full `/dev/shm`
/// (Docker's default is 64 MiB) is an [`Error::Io`] there, not a SIGBUS at a later write. A
/// named segment cannot be sealed, though: any process that can open the name can shrink the
/// file, and a process that then touches a mapped page beyond the new end is killed by SIGBUS.
/// `read_at` and `write_at` check the current size first and report a shrunk segment as
/// [`Error::InvalidState`], but a shrink that races with the copy, or an access through the
/// slice views or [`as_ptr`](SharedMemory::as_ptr), is not covered: share the name only with
/// processes that do not resize it. (`Value`, `Array` and the other anonymous objects of `mp`
/// are sealed memfds, which nobody can shrink.)
///
/// ```
/// use mp::shared_memory::SharedMemory;
/// let shm = SharedMemory::create(16)?;
/// shm.write_at(0, b"hello")?;
/// let other = SharedMemory::open(shm.name())?;
/// let mut buf = [0u8; 5];
/// other.read_at(0, &mut buf)?;
/// assert_eq!(&buf, b"hello");
/// assert!(other.size() >= 16);
/// drop(shm); // the creator unlinks the name
/// assert!(SharedMemory::open(other.name()).is_err());
/// # Ok::<(), mp::Error>(())
/// ```
pub struct SharedMemory {
    name: String,
    region: Arc<SharedRegion>,
    /// This handle created the name and has not unlinked it yet.
    owner: std::sync::atomic::AtomicBool,
}

fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidArgument {
        message: message.into(),
    }
}

/// Accepts `name` or `/name`; returns the bare name.
fn check_name(name: &str) -> Result<&str> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    if bare.is_empty() {
        return Err(invalid("a shared memory name cannot be empty"));
    }
    if bare.contains('\0') {
        return Err(invalid(format!(
            "shared memory name {name:?} contains a NUL byte"
        )));
    }
    if bare.contains('/') {
        return Err(invalid(format!(
            "shared memory name {name:?} contains '/' (only a leading one is allowed)"
        )));
    }
    if bare.len() > MAX_NAME {
        return Err(invalid(format!(
            "shared memory name of {} bytes is longer than {MAX_NAME}",
            bare.len()
        )));
    }
    Ok(bare)
}

fn shm_error(context: &'static str, name: &str, e: Errno) -> Error {
    Error::Io {
        context,
        source: std::io::Error::new(
            std::io::Error::from(e).kind(),
            format!("shared memory {name:?}: {}", e.desc()),
        ),
    }
}

/// When a new segment's name is given to the resource tracker. Before the segment exists, a
/// kill in between leaves nothing behind (the tracker's unlink finds no name); but a name the
/// caller chose may be another process's, which the tracker must never unlink, so such a name
/// is registered once this process has created it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Registration {
    /// For generated names, which no one else uses.
    BeforeCreating,
    /// For names given by the caller.
    AfterCreating,
}

fn random_name() -> Result<String> {
    let mut b = [0u8; 8];
    crate::sys::random_bytes(&mut b).map_err(|e| Error::io("getrandom", e))?;
    Ok(format!(
        "mp-{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    ))
}

impl SharedMemory {
    /// A new segment of `size` bytes (zero-filled, every page allocated now) with a fresh
    /// `mp-…` name. Zero is [`Error::InvalidArgument`]; not enough room in `/dev/shm` is an
    /// [`Error::Io`] (`ENOSPC`), and the name is removed again.
    pub fn create(size: usize) -> Result<SharedMemory> {
        loop {
            match Self::create_inner(&random_name()?, size, Registration::BeforeCreating) {
                // A generated name that exists already: draw another (Python does the same).
                Err(Error::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::AlreadyExists => {}
                other => return other,
            }
        }
    }

    /// A new segment named `name` (with or without a leading `/`). A name in use is an
    /// [`Error::Io`] of kind `AlreadyExists`; zero size, an empty name, a NUL or `/` inside it are
    /// [`Error::InvalidArgument`].
    pub fn create_named(name: &str, size: usize) -> Result<SharedMemory> {
        Self::create_inner(check_name(name)?, size, Registration::AfterCreating)
    }

    fn create_inner(name: &str, size: usize, registration: Registration) -> Result<SharedMemory> {
        if size == 0 {
            return Err(invalid("a shared memory segment needs a positive size"));
        }
        let size_off = i64::try_from(size).map_err(|_| invalid("shared memory size too large"))?;
        if registration == Registration::BeforeCreating {
            tracker::register(name)?;
        }
        let fd = nix::sys::mman::shm_open(
            format!("/{name}").as_str(),
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR | OFlag::O_CLOEXEC,
            Mode::S_IRUSR | Mode::S_IWUSR,
        )
        .map_err(|e| {
            if registration == Registration::BeforeCreating {
                tracker::unregister(name);
            }
            shm_error("create shared memory", name, e)
        })?;
        // From here on the name exists: remove it again if anything fails.
        let unlink_on_error = |e: Error| {
            let _ = nix::sys::mman::shm_unlink(format!("/{name}").as_str());
            e
        };
        if registration == Registration::AfterCreating {
            tracker::register(name).map_err(unlink_on_error)?;
        }
        let done = nix::unistd::ftruncate(&fd, size_off)
            .map_err(|e| shm_error("size shared memory", name, e))
            .and_then(|()| {
                reserve_pages(&fd, size_off).map_err(|e| {
                    let errno = Errno::from_raw(e.raw_os_error().unwrap_or(0));
                    shm_error("reserve shared memory (is /dev/shm full?)", name, errno)
                })
            })
            .and_then(|()| {
                SharedRegion::from_unsealed_fd(fd).map_err(|e| Error::io("map shared memory", e))
            });
        match done {
            Ok(region) => Ok(SharedMemory {
                name: name.to_owned(),
                region: Arc::new(region),
                owner: true.into(),
            }),
            Err(e) => {
                tracker::unregister(name);
                Err(unlink_on_error(e))
            }
        }
    }

    /// Attaches to the existing segment `name`. A missing name is an [`Error::Io`] of kind
    /// `NotFound`; an empty segment is an [`Error::Io`] of kind `InvalidInput`. The size is the
    /// segment's own, now (see the type's docs for a segment shrunk later).
    pub fn open(name: &str) -> Result<SharedMemory> {
        let name = check_name(name)?;
        let fd = nix::sys::mman::shm_open(
            format!("/{name}").as_str(),
            OFlag::O_RDWR | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| shm_error("open shared memory", name, e))?;
        Self::attach(name.to_owned(), fd)
    }

    fn attach(name: String, fd: OwnedFd) -> Result<SharedMemory> {
        let region =
            SharedRegion::from_unsealed_fd(fd).map_err(|e| Error::io("map shared memory", e))?;
        Ok(SharedMemory {
            name,
            region: Arc::new(region),
            owner: false.into(),
        })
    }

    /// The segment's name, without a leading `/` (open it elsewhere with this).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The size in bytes.
    pub fn size(&self) -> usize {
        self.region.len()
    }

    /// Removes the name (the memory stays mapped where it is mapped). Any handle may unlink;
    /// a name already removed is an [`Error::Io`] of kind `NotFound`.
    pub fn unlink(&self) -> Result<()> {
        let was_owner = self.owner.swap(false, std::sync::atomic::Ordering::AcqRel);
        let r = nix::sys::mman::shm_unlink(format!("/{}", self.name).as_str())
            .map_err(|e| shm_error("unlink shared memory", &self.name, e));
        if was_owner {
            tracker::unregister(&self.name);
        }
        r
    }

    /// Whether this handle created the segment and will unlink it when dropped.
    pub fn is_owner(&self) -> bool {
        self.owner.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Gives up ownership: the name outlives this handle (and this process, unless a handle
    /// unlinks it). The resource tracker forgets it too. Returns the name.
    pub fn keep(&self) -> &str {
        if self.owner.swap(false, std::sync::atomic::Ordering::AcqRel) {
            tracker::unregister(&self.name);
        }
        &self.name
    }

    /// Hands the unlinking to someone else (a [`SharedMemoryManager`](super::SharedMemoryManager))
    /// while the resource tracker keeps covering a killed process.
    pub(crate) fn disown(&self) {
        self.owner
            .store(false, std::sync::atomic::Ordering::Release);
    }

    /// The start of the mapping (page-aligned), for views of your own. Accesses through it
    /// are yours to synchronize; use atomics where other threads or processes write.
    pub fn as_ptr(&self) -> *mut u8 {
        self.region.as_ptr()
    }

    /// Copies `buf.len()` bytes from offset `offset` into `buf`. Out of range is
    /// [`Error::InvalidArgument`]; a segment that another process shrank below the range is
    /// [`Error::InvalidState`].
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.check_range(offset, buf.len())?;
        // SAFETY: the range is inside the mapping (checked) and backed by the file (checked
        // just now; see the type's docs for a shrink racing with the copy); `buf` is a distinct
        // Rust buffer. In this process the segment's bytes are only accessed through
        // `atomic_copy` or by callers of the unsafe views, who promise no concurrent access.
        unsafe { atomic_copy::copy_out(self.as_ptr().add(offset), buf) };
        Ok(())
    }

    /// Copies `data` into the segment at `offset`. Errors as for
    /// [`read_at`](SharedMemory::read_at).
    pub fn write_at(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.check_range(offset, data.len())?;
        // SAFETY: as in `read_at`, in the other direction; the mapping is writable.
        unsafe { atomic_copy::copy_in(data, self.as_ptr().add(offset)) };
        Ok(())
    }

    fn check_range(&self, offset: usize, len: usize) -> Result<()> {
        let end = match offset.checked_add(len) {
            Some(end) if end <= self.size() => end,
            _ => {
                return Err(invalid(format!(
                    "range {offset}..{} is outside the {} bytes of shared memory {:?}",
                    offset.saturating_add(len),
                    self.size(),
                    self.name
                )));
            }
        };
        // Touching a page beyond the file's end is SIGBUS: refuse while we still can.
        let now = self
            .region
            .current_len()
            .map_err(|e| Error::io("fstat shared memory", e))?;
        if end > now {
            return Err(Error::state(format!(
                "shared memory {:?} was shrunk to {now} bytes by another process, so range \
                 {offset}..{end} is gone; processes sharing a segment must not resize it",
                self.name
            )));
        }
        Ok(())
    }

    /// The whole segment as bytes (Python's `buf`).
    ///
    /// # Safety
    /// No thread of any process may write the segment while the slice is alive (synchronize
    /// with a lock, a barrier or an event between phases), and none may shrink it (see the
    /// type's docs).
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is `size()` bytes and outlives `&self`; the caller guarantees that
        // nobody writes meanwhile.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.size()) }
    }

    /// The whole segment as mutable bytes.
    ///
    /// # Safety
    /// No other access to the segment (a reference, `read_at`, `write_at`), in this or any
    /// other process, may happen while the slice is alive, and nobody may shrink it.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn as_mut_slice(&self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; the caller guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.as_ptr(), self.size()) }
    }

    /// The segment as a slice of `T` (Python's `buf.cast(...)`), over `size() / size_of::<T>()`
    /// elements.
    ///
    /// # Safety
    /// As for [`as_slice`](SharedMemory::as_slice).
    pub unsafe fn as_slice_of<T: bytemuck::Pod>(&self) -> &[T] {
        const { assert_page_aligned::<T>() };
        // SAFETY: the mapping is page-aligned, enough for T (checked at compile time), holds
        // `size() / size_of::<T>()` whole elements, and T is valid for any bytes; the caller
        // guarantees nobody writes meanwhile.
        unsafe {
            std::slice::from_raw_parts(
                self.as_ptr() as *const T,
                self.size() / size_of::<T>().max(1),
            )
        }
    }

    /// The segment as a mutable slice of `T`.
    ///
    /// # Safety
    /// As for [`as_mut_slice`](SharedMemory::as_mut_slice).
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn as_mut_slice_of<T: bytemuck::Pod>(&self) -> &mut [T] {
        const { assert_page_aligned::<T>() };
        // SAFETY: as in `as_slice_of`; the caller guarantees exclusive access.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.as_ptr() as *mut T,
                self.size() / size_of::<T>().max(1),
            )
        }
    }
}

/// Stops at compile time a view of a type aligned beyond a page (the smallest page, 4096 bytes):
/// the mapping would not be aligned for it.
const fn assert_page_aligned<T>() {
    assert!(
        align_of::<T>() <= 4096,
        "a SharedMemory view needs a type aligned to at most 4096 bytes"
    );
}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        if self.is_owner() {
            let _ = self.unlink();
        }
    }
}

impl fmt::Debug for SharedMemory {
    /// `SharedMemory("mp-…", size=512)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SharedMemory({:?}, size={})", self.name, self.size())
    }
}

impl Serialize for SharedMemory {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        (&self.name, FdRef(self.region.as_fd())).serialize(s)
    }
}

impl<'de> Deserialize<'de> for SharedMemory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (name, FdOwned(fd)): (String, FdOwned) = Deserialize::deserialize(d)?;
        SharedMemory::attach(name, fd).map_err(|e| codec::de_error::<D::Error>(&e.to_string()))
    }
}
