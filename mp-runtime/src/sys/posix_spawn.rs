//! posix_spawn(3) of a program with an exact set of inherited descriptors.
//!
//! glibc implements posix_spawn with `clone(CLONE_VM | CLONE_VFORK)`, so the cost does not grow
//! with the parent's memory (a plain fork+exec copies page tables first). The child inherits
//! stdout and stderr, gets `/dev/null` as stdin, the given descriptors at the given numbers, and
//! nothing else: every other descriptor is closed by `closefrom` before exec.

use std::ffi::{CStr, CString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::fcntl::{FcntlArg, fcntl};

/// Starts `program` with `argv` and `envp`; `fds` maps parent descriptors to child numbers,
/// which must be 3 or above and distinct. Returns the child's pid.
pub(crate) fn spawn(
    program: &CStr,
    argv: &[CString],
    envp: &[CString],
    fds: &[(BorrowedFd<'_>, i32)],
) -> io::Result<i32> {
    // Move every source above the highest target first, so that no `dup2` overwrites a source
    // still to be placed. The lowest free numbers above it are taken, so this works under any
    // descriptor limit that leaves room for one copy of each. The copies close when we return.
    let first_free = fds.iter().map(|(_, t)| *t + 1).max().unwrap_or(3).max(3);
    let staged: Vec<(OwnedFd, i32)> = fds
        .iter()
        .map(|(fd, target)| {
            let high = fcntl(*fd, FcntlArg::F_DUPFD_CLOEXEC(first_free))?;
            // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
            Ok((unsafe { OwnedFd::from_raw_fd(high) }, *target))
        })
        .collect::<io::Result<_>>()?;

    let actions = FileActions::new()?;
    let devnull = c"/dev/null";
    actions.check(
        // SAFETY: `actions` is initialized; the path is a valid NUL-terminated string that
        // glibc copies.
        unsafe {
            libc::posix_spawn_file_actions_addopen(
                actions.as_ptr(),
                0,
                devnull.as_ptr(),
                libc::O_RDONLY,
                0,
            )
        },
    )?;
    for (fd, target) in &staged {
        actions.check(
            // SAFETY: `actions` is initialized; both numbers are plain integers (the source is
            // open until posix_spawn returns, because `staged` outlives the call).
            unsafe {
                libc::posix_spawn_file_actions_adddup2(actions.as_ptr(), fd.as_raw_fd(), *target)
            },
        )?;
    }
    actions.check(
        // SAFETY: `actions` is initialized; closefrom only names a descriptor number.
        unsafe { libc::posix_spawn_file_actions_addclosefrom_np(actions.as_ptr(), first_free) },
    )?;

    let attr = SpawnAttr::new()?;
    let mut empty = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initializes the set it is given.
    unsafe { libc::sigemptyset(empty.as_mut_ptr()) };
    let mut defaults = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: as above; sigaddset writes into the set initialized on the line before.
    unsafe {
        libc::sigemptyset(defaults.as_mut_ptr());
        libc::sigaddset(defaults.as_mut_ptr(), libc::SIGINT);
        libc::sigaddset(defaults.as_mut_ptr(), libc::SIGTERM);
        libc::sigaddset(defaults.as_mut_ptr(), libc::SIGCHLD);
    }
    // SAFETY: `attr` is initialized; both sets were initialized above and are copied by glibc.
    attr.check(unsafe { libc::posix_spawnattr_setsigmask(attr.as_ptr(), empty.as_ptr()) })?;
    // SAFETY: as above.
    attr.check(unsafe { libc::posix_spawnattr_setsigdefault(attr.as_ptr(), defaults.as_ptr()) })?;
    attr.check(
        // SAFETY: `attr` is initialized; the flags are valid POSIX_SPAWN_* bits.
        unsafe {
            libc::posix_spawnattr_setflags(
                attr.as_ptr(),
                (libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short,
            )
        },
    )?;

    let mut argv_ptrs: Vec<*mut libc::c_char> =
        argv.iter().map(|a| a.as_ptr().cast_mut()).collect();
    argv_ptrs.push(std::ptr::null_mut());
    let mut envp_ptrs: Vec<*mut libc::c_char> =
        envp.iter().map(|e| e.as_ptr().cast_mut()).collect();
    envp_ptrs.push(std::ptr::null_mut());

    let mut pid: libc::pid_t = 0;
    // SAFETY: every pointer is valid for the call: `program`, `argv` and `envp` strings are
    // borrowed for its duration and both arrays are NULL-terminated; `actions` and `attr` are
    // initialized; posix_spawn does not keep any of them.
    let rc = unsafe {
        libc::posix_spawn(
            &mut pid,
            program.as_ptr(),
            actions.as_ptr(),
            attr.as_ptr(),
            argv_ptrs.as_ptr(),
            envp_ptrs.as_ptr(),
        )
    };
    drop(staged);
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(pid)
}

/// An initialized `posix_spawn_file_actions_t`, destroyed on drop.
struct FileActions(Box<MaybeUninit<libc::posix_spawn_file_actions_t>>);

impl FileActions {
    fn new() -> io::Result<Self> {
        let mut raw = Box::new(MaybeUninit::uninit());
        // SAFETY: init writes a valid object into the boxed, properly aligned storage.
        let rc = unsafe { libc::posix_spawn_file_actions_init(raw.as_mut_ptr()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(FileActions(raw))
    }
    fn as_ptr(&self) -> *mut libc::posix_spawn_file_actions_t {
        self.0.as_ptr().cast_mut()
    }
    fn check(&self, rc: i32) -> io::Result<()> {
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(rc))
        }
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: the object was initialized in `new` and is destroyed exactly once.
        unsafe { libc::posix_spawn_file_actions_destroy(self.as_ptr()) };
    }
}

/// An initialized `posix_spawnattr_t`, destroyed on drop.
struct SpawnAttr(Box<MaybeUninit<libc::posix_spawnattr_t>>);

impl SpawnAttr {
    fn new() -> io::Result<Self> {
        let mut raw = Box::new(MaybeUninit::uninit());
        // SAFETY: init writes a valid object into the boxed, properly aligned storage.
        let rc = unsafe { libc::posix_spawnattr_init(raw.as_mut_ptr()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(SpawnAttr(raw))
    }
    fn as_ptr(&self) -> *mut libc::posix_spawnattr_t {
        self.0.as_ptr().cast_mut()
    }
    fn check(&self, rc: i32) -> io::Result<()> {
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(rc))
        }
    }
}

impl Drop for SpawnAttr {
    fn drop(&mut self) {
        // SAFETY: the object was initialized in `new` and is destroyed exactly once.
        unsafe { libc::posix_spawnattr_destroy(self.as_ptr()) };
    }
}
