//! [`Handle`]: any file descriptor, passable to another process (Python's `send_handle` /
//! `recv_handle`).

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::connection::{FdOwned, FdRef};

/// An owned file descriptor that can be sent to another process: as a worker argument, a
/// result, or inside any message. The receiver gets its own descriptor for the same open file,
/// socket or pipe (SCM_RIGHTS), so writes through it land where the sender's would.
///
/// ```
/// use std::os::fd::OwnedFd;
/// let file: OwnedFd = std::fs::File::open("/dev/null")?.into();
/// let h = mp::Handle::from(file);
/// let (a, b) = mp::Pipe::<mp::Handle>::duplex()?;
/// a.send(&h)?;
/// let received: OwnedFd = b.recv()?.into();
/// # drop(received);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Handle(OwnedFd);

impl Handle {
    /// Takes ownership of the descriptor back.
    pub fn into_inner(self) -> OwnedFd {
        self.0
    }
}

impl From<OwnedFd> for Handle {
    fn from(fd: OwnedFd) -> Self {
        Handle(fd)
    }
}

impl From<Handle> for OwnedFd {
    fn from(h: Handle) -> Self {
        h.0
    }
}

impl AsFd for Handle {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Handle({})", self.0.as_raw_fd())
    }
}

impl Serialize for Handle {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        FdRef(self.0.as_fd()).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Handle {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        FdOwned::deserialize(d).map(|f| Handle(f.0))
    }
}
