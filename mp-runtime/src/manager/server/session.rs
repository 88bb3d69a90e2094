//! One client connection, served on a thread of its own: requests in, replies out, in order.
//!
//! The first frame says which session the connection belongs to (a process's first connection
//! opens one). Anything malformed ends this connection only; the server and every other client
//! go on. When a session's first connection ends, the session ends: its references are dropped
//! and its other connections closed.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::super::managed::{Call, Caller};
use super::super::protocol::{Hello, PROTOCOL, RemoteError, Reply, Request, Welcome};
use super::super::wire::Wire;
use super::Server;
use super::find_type;
use super::limits;
use crate::codec;
use crate::connection::handoff::Handoff;
use crate::error::Result;
use crate::sys::poll::Deadline;
use crate::transport::frame::{HEADER_LEN, header};

/// How long an authenticated connection has to say which session it belongs to (a client
/// sends its `Hello` right after the handshake).
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Turns a connection away before its `Hello`: it reads the refusal as its welcome.
pub(super) fn refuse(fd: OwnedFd, tcp: bool, why: RemoteError) {
    let mut wire = Wire::new(fd, tcp);
    let _ = wire.send(&Welcome::Refused(why));
}

/// Serves one accepted, authenticated connection until it closes.
pub(super) fn serve_connection(server: &Arc<Server>, fd: OwnedFd, tcp: bool) {
    let mut wire = Wire::new(fd, tcp);
    let Some((session, anchor, thread, page)) = welcome(server, &mut wire) else {
        return;
    };
    let conn = match server.add_conn(session, &wire_fd(&wire)) {
        Ok(conn) => conn,
        Err(refused) => {
            let _ = wire.send(&Welcome::Refused(refused));
            if anchor {
                server.end_session(session);
            }
            return;
        }
    };
    let caller = Caller {
        session,
        thread,
        tcp: wire.is_tcp(),
    };
    // The client's page, if it offered one: said to be in use before the welcome, used after
    // it (so that both sides count the messages that follow from the same point).
    if let Some(page) = &page {
        page.mark_attached();
    }
    if wire
        .send(&Welcome::Accepted {
            session,
            manager: server.manager,
        })
        .is_ok()
    {
        if let Some(page) = page {
            wire.attach(page);
        }
        while let Ok(frame) = wire.recv(Deadline::NEVER) {
            let request = match codec::decode_borrowed::<Request<'_>>(&frame.payload) {
                Ok(r) => r,
                Err(e) => {
                    let _ = wire.send(&Reply::Err {
                        id: 0,
                        error: RemoteError::Protocol(format!("malformed request: {e}")),
                    });
                    break;
                }
            };
            let is_shutdown = matches!(
                request,
                Request::Shutdown { token, .. } if token == server.owner_token
            );
            if handle(server, &mut wire, caller, request, frame.fds).is_err() {
                break;
            }
            if is_shutdown {
                server.stop();
                break;
            }
        }
    }
    server.remove_conn(conn);
    if anchor {
        server.end_session(session);
    }
}

/// A descriptor copy of the connection's socket, for the server's list of connections.
fn wire_fd(wire: &Wire) -> OwnedFd {
    wire.fd()
        .try_clone_to_owned()
        .unwrap_or_else(|_| std::fs::File::open("/dev/null").expect("/dev/null").into())
}

/// Reads the client's `Hello`: returns its session, whether this connection opened it, and
/// the client thread it calls for.
/// Reads the client's `Hello`: its session (new or joined), whether this connection anchors it,
/// its thread, and the page of shared memory a local client offered with it (if it can be
/// mapped; a connection works without).
fn welcome(server: &Arc<Server>, wire: &mut Wire) -> Option<(u64, bool, u64, Option<Handoff>)> {
    let mut frame = wire.recv(Deadline::after(Some(HELLO_TIMEOUT))).ok()?;
    let page = match frame.fds.pop() {
        Some(fd) if frame.fds.is_empty() && !wire.is_tcp() => {
            Handoff::from_fd(fd, 1).ok().map(|(page, _fd)| page)
        }
        _ => None,
    };
    let hello = match Hello::decode(&frame.payload) {
        Ok(h) => h,
        Err(e) => {
            let _ = wire.send(&Welcome::Refused(RemoteError::Protocol(e.to_string())));
            return None;
        }
    };
    if hello.protocol != PROTOCOL {
        let _ = wire.send(&Welcome::Refused(RemoteError::Incompatible {
            type_name: "mp manager protocol".into(),
            message: format!(
                "the client speaks version {} and the server version {PROTOCOL}",
                hello.protocol
            ),
        }));
        return None;
    }
    let mut table = server.lock();
    match hello.session {
        None => {
            let session = table.new_session();
            if let Some(parent) = hello.borrow {
                table.borrow(session, parent);
            }
            Some((session, true, hello.thread, page))
        }
        Some(s) if table.has_session(s) => Some((s, false, hello.thread, page)),
        Some(_) => {
            drop(table);
            let _ = wire.send(&Welcome::Refused(RemoteError::NoSuchObject));
            None
        }
    }
}

/// Runs one request and sends its reply (if it has one). An error means the connection is
/// unusable.
fn handle(
    server: &Arc<Server>,
    wire: &mut Wire,
    caller: Caller,
    request: Request<'_>,
    fds: Vec<OwnedFd>,
) -> Result<()> {
    let session = caller.session;
    match request {
        Request::Call {
            id,
            obj,
            method,
            args,
        } => {
            // The table is locked only to find the object, never during the call. A session
            // reaches only objects it holds a reference to.
            let object = server.lock().get_held(session, obj);
            // Descriptors that came with the call are kept only while the reserve allows.
            let object = object.and_then(|o| {
                if fds.is_empty() {
                    Ok(o)
                } else {
                    server.descriptors.spare().map(|_| o)
                }
            });
            let result = object.and_then(|object| {
                let mut call = Call::new(args, fds, caller, obj).on_connection(wire.as_raw_fd());
                object.dispatch(method, &mut call)
            });
            let result = result.and_then(|out| server.finish(out));
            match result {
                Ok(out) => {
                    let raw: Vec<RawFd> = out.fds.iter().map(|f| f.as_raw_fd()).collect();
                    wire.send_with_fds(
                        &Reply::Ok {
                            id,
                            value: &out.bytes,
                        },
                        &raw,
                    )
                }
                Err(error) => wire.send(&Reply::Err { id, error }),
            }
        }
        Request::Create {
            id,
            type_name,
            fingerprint,
            label,
            ctor,
            args,
        } => {
            let result = match find_type(type_name) {
                None => Err(RemoteError::Incompatible {
                    type_name: type_name.to_owned(),
                    message: "no such managed type is registered in the manager's program (is \
                              the server a different build?)"
                        .into(),
                }),
                Some(t) if t.fingerprint != fingerprint => Err(RemoteError::Incompatible {
                    type_name: type_name.to_owned(),
                    message: "the manager's program has another definition of this type \
                              (fingerprints differ): build client and server from the same \
                              source"
                        .into(),
                }),
                Some(t) => server.may_create(session).and_then(|before| {
                    let mut call = Call::new(args, fds, caller, 0);
                    (t.build)(ctor, &mut call).and_then(|object| {
                        // What the new object opened (approximately, with other requests
                        // served at the same time) is charged to its creator.
                        let opened = limits::open_descriptors().saturating_sub(before);
                        // The client may have died while its object was built: then it is not
                        // kept (dropped here, after the table's lock).
                        let inserted =
                            server
                                .lock()
                                .insert(object, label.to_owned(), session, opened);
                        inserted.map_err(|dropped| {
                            drop(dropped);
                            RemoteError::State("the calling process left the manager".into())
                        })
                    })
                }),
            };
            reply(wire, id, result)
        }
        Request::Retain { id, obj } => {
            let result = {
                let mut table = server.lock();
                if table.held_by(session, obj) {
                    table.retain(obj, server.ticket_ttl)
                } else {
                    Err(RemoteError::NoSuchObject)
                }
            };
            reply(wire, id, result)
        }
        Request::Attach { id, ticket } => {
            let (result, dropped) = server.lock().attach(session, ticket);
            drop(dropped);
            reply(wire, id, result)
        }
        Request::Lookup { id, name, label } => {
            let result = server.lock().lookup(session, name, label);
            reply(wire, id, result)
        }
        Request::Expose {
            id,
            name,
            obj,
            replace,
        } => {
            let result = server.lock().expose(session, name, obj, replace);
            match result {
                Ok(dropped) => {
                    drop(dropped);
                    reply(wire, id, Ok(()))
                }
                Err(e) => reply::<()>(wire, id, Err(e)),
            }
        }
        Request::Release { obj, count } => {
            let dropped = server.lock().release(session, obj, count);
            drop(dropped);
            Ok(())
        }
        Request::Stats { id } => {
            let n = server.lock().len();
            reply(wire, id, Ok(n))
        }
        Request::Shutdown { id, token } if token == server.owner_token => reply(wire, id, Ok(())),
        Request::Shutdown { id, .. } => reply::<()>(
            wire,
            id,
            Err(RemoteError::State(
                "only the process that started the manager may shut it down".into(),
            )),
        ),
    }
}

fn reply<T: Serialize>(
    wire: &mut Wire,
    id: u64,
    result: std::result::Result<T, RemoteError>,
) -> Result<()> {
    match result.and_then(|v| codec::encode(&v).map_err(|e| RemoteError::Codec(e.to_string()))) {
        Ok(enc) => wire.send(&Reply::Ok {
            id,
            value: &enc.bytes,
        }),
        Err(error) => wire.send(&Reply::Err { id, error }),
    }
}

/// A whole frame (header included) of `message`, for notices written outside a connection's
/// thread.
pub(super) fn encode_frame<T: Serialize>(message: &T, out: &mut Vec<u8>) -> Result<()> {
    out.clear();
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    codec::encode_into(message, out)?;
    let head = header(out.len() - HEADER_LEN, 0);
    out[..HEADER_LEN].copy_from_slice(&head);
    Ok(())
}
