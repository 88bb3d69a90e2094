//! Paths that travel as bytes: every path a Linux file system can hold, UTF-8 or not.
//!
//! serde encodes a `Path`/`PathBuf` as a string and refuses one that is not UTF-8 (a file name
//! in Latin-1, a corrupted name), so a pool item or a queue message carrying such a path fails
//! with [`Error::Codec`](crate::Error::Codec). On Unix a path is a byte string; these encode it
//! as its bytes, which any path has.
//!
//! Two ways: the wrapper [`PathBytes`] as an argument or result type, or the serde helper
//! [`path_bytes`](crate::path_bytes) on a field: `#[serde(with = "mp::path_bytes")]`.
//!
//! ```
//! use std::os::unix::ffi::OsStrExt;
//!
//! #[mp::worker]
//! fn name_len(p: mp::PathBytes) -> usize { p.as_os_str().len() }
//!
//! #[mp::main]
//! fn main() -> mp::Result<()> {
//!     let odd = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(b"caf\xe9.txt"));
//!     let pool = mp::Pool::new(1)?;
//!     assert_eq!(pool.apply(name_len, (mp::PathBytes::from(odd),))?, 8);
//!     Ok(())
//! }
//! ```

use std::ffi::OsStr;
use std::ops::Deref;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A [`PathBuf`] that is encoded as its bytes, so that a path which is not UTF-8 can be sent to
/// another process (see the [module documentation](crate::path_bytes)). It dereferences to
/// [`Path`].
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PathBytes(pub PathBuf);

impl PathBytes {
    /// The path inside.
    pub fn into_inner(self) -> PathBuf {
        self.0
    }
}

impl Deref for PathBytes {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for PathBytes {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl From<PathBuf> for PathBytes {
    fn from(p: PathBuf) -> Self {
        PathBytes(p)
    }
}

impl From<&Path> for PathBytes {
    fn from(p: &Path) -> Self {
        PathBytes(p.to_path_buf())
    }
}

impl From<PathBytes> for PathBuf {
    fn from(p: PathBytes) -> Self {
        p.0
    }
}

impl Serialize for PathBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for PathBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize(d).map(PathBytes)
    }
}

/// Serializes a path as its bytes (for `#[serde(with = "mp::path_bytes")]`).
pub fn serialize<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(path.as_os_str().as_bytes())
}

/// Deserializes a path written by [`serialize`].
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    let bytes: serde_bytes::ByteBuf = Deserialize::deserialize(d)?;
    Ok(PathBuf::from(OsStr::from_bytes(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_that_is_not_utf8_round_trips() {
        let p = PathBytes(PathBuf::from(OsStr::from_bytes(b"/tmp/\xff\xfe")));
        assert!(crate::codec::encode(&p.0).is_err(), "serde refuses it");
        let enc = crate::codec::encode(&p).unwrap();
        let back: PathBytes = crate::codec::decode(&enc.bytes, Vec::new()).unwrap();
        assert_eq!(back, p);

        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Entry {
            #[serde(with = "crate::path_bytes")]
            path: PathBuf,
        }
        let e = Entry { path: p.0.clone() };
        let enc = crate::codec::encode(&e).unwrap();
        assert_eq!(
            crate::codec::decode::<Entry>(&enc.bytes, Vec::new()).unwrap(),
            e
        );
    }
}
