//! Moving frames between processes: length-prefixed messages over Unix stream sockets, with
//! descriptors passed as SCM_RIGHTS, and the HMAC handshake that authenticates a peer.

pub(crate) mod auth;
pub(crate) mod frame;
pub(crate) mod reader;
pub(crate) mod socket;
