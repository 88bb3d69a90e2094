//! The messages between rank 0 and the node agents, one MPI message each.
//!
//! ```text
//! Hello:        1 cpus host:bytes nlines { line:bytes }*     agent → 0, once at start
//! Launch:       2 worker method init? [name:bytes args:bytes] 0 → agent
//! Launched:     3 worker pid                                  agent → 0
//! LaunchFailed: 4 worker message:bytes                        agent → 0
//! Data:         5 worker bytes…                               both ways: the worker's stream
//! Kill:         6 worker                                      0 → agent
//! Exited:       7 worker code(zigzag)                         agent → 0
//! Shutdown:     8 code(zigzag)                                0 → agent, when main ended
//! Bye:          9                                             agent → 0, its last message
//! Frame:       10 worker len                                  agent → 0: the next message is
//!                                                             one whole answer frame's payload
//! Bulk:        11 worker bytes…                               0 → agent: the stream goes on
//!                                                             with bytes, then the next message
//! ```
//!
//! Rank 0 receives until every agent's `Bye` before it finalizes MPI: no message is left
//! unreceived on either side, which MPI over TCP does not finalize cleanly.
//!
//! `worker` is a number rank 0 gives each worker it starts; integers are LEB128 varints (the
//! pool's `wire` encoding). `Data` carries a piece of the byte stream between the pool's
//! scheduler and one worker process, which the two ends forward as it comes: MPI keeps the
//! order of messages between two ranks, so the stream arrives whole and in order, and
//! `Exited` arrives after the last `Data` of its worker. From an agent, `Data` holds whole
//! frames only, and a long answer travels as `Frame` followed by a message of its bare payload:
//! rank 0 receives that payload into the buffer the scheduler then reads it from, with no copy
//! on the way. To an agent, a long job goes as `Bulk` (the frame's header and the job's head)
//! followed by a message of its items, sent from the buffer the task keeps them in.

use crate::error::{Error, Result};
use crate::pool::wire::{Cursor, put_bytes, put_uint};
use crate::start_method::StartMethod;

const HELLO: u8 = 1;
const LAUNCH: u8 = 2;
const LAUNCHED: u8 = 3;
const LAUNCH_FAILED: u8 = 4;
const DATA: u8 = 5;
const KILL: u8 = 6;
const EXITED: u8 = 7;
const SHUTDOWN: u8 = 8;
const BYE: u8 = 9;
const FRAME: u8 = 10;
const BULK: u8 = 11;

/// What a node agent says about itself when it starts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Hello {
    pub(crate) cpus: usize,
    pub(crate) host: String,
    /// Its registry (`registry::registry_lines`).
    pub(crate) lines: Vec<String>,
}

/// How to start a worker process on a node.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LaunchSpec {
    pub(crate) method: StartMethod,
    /// The initializer's registered name and encoded arguments.
    pub(crate) init: Option<(String, Vec<u8>)>,
    /// The worker's memory limits in bytes (soft, hard; 0 for none).
    pub(crate) memory: (u64, u64),
}

/// One message.
#[derive(Debug, PartialEq)]
pub(crate) enum Msg<'a> {
    Hello(Hello),
    Launch { worker: u64, spec: LaunchSpec },
    Launched { worker: u64, pid: i32 },
    LaunchFailed { worker: u64, message: String },
    Data { worker: u64, bytes: &'a [u8] },
    Kill { worker: u64 },
    Exited { worker: u64, code: i32 },
    Shutdown { code: i32 },
    Bye,
    Frame { worker: u64, len: u64 },
    Bulk { worker: u64, bytes: &'a [u8] },
}

fn zigzag(v: i32) -> u64 {
    u64::from(((v << 1) ^ (v >> 31)) as u32)
}

fn unzigzag(v: u64) -> Result<i32> {
    let v = u32::try_from(v).map_err(|_| Error::protocol("exit code out of range"))?;
    Ok(((v >> 1) as i32) ^ -((v & 1) as i32))
}

fn method_byte(m: StartMethod) -> u8 {
    match m {
        StartMethod::Fork => 0,
        StartMethod::Spawn => 1,
        StartMethod::ForkServer => 2,
    }
}

/// The head of a `Data` message for `worker`, to which the stream's bytes are appended.
pub(crate) fn data_head(worker: u64, capacity: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(capacity + 12);
    buf.push(DATA);
    put_uint(&mut buf, worker);
    buf
}

impl Msg<'_> {
    /// The message's bytes.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        match self {
            Msg::Hello(h) => {
                b.push(HELLO);
                put_uint(&mut b, h.cpus as u64);
                put_bytes(&mut b, h.host.as_bytes());
                put_uint(&mut b, h.lines.len() as u64);
                for l in &h.lines {
                    put_bytes(&mut b, l.as_bytes());
                }
            }
            Msg::Launch { worker, spec } => {
                b.push(LAUNCH);
                put_uint(&mut b, *worker);
                b.push(method_byte(spec.method));
                match &spec.init {
                    None => b.push(0),
                    Some((name, args)) => {
                        b.push(1);
                        put_bytes(&mut b, name.as_bytes());
                        put_bytes(&mut b, args);
                    }
                }
                put_uint(&mut b, spec.memory.0);
                put_uint(&mut b, spec.memory.1);
            }
            Msg::Launched { worker, pid } => {
                b.push(LAUNCHED);
                put_uint(&mut b, *worker);
                put_uint(&mut b, zigzag(*pid));
            }
            Msg::LaunchFailed { worker, message } => {
                b.push(LAUNCH_FAILED);
                put_uint(&mut b, *worker);
                put_bytes(&mut b, message.as_bytes());
            }
            Msg::Data { worker, bytes } => {
                b = data_head(*worker, bytes.len());
                b.extend_from_slice(bytes);
            }
            Msg::Kill { worker } => {
                b.push(KILL);
                put_uint(&mut b, *worker);
            }
            Msg::Exited { worker, code } => {
                b.push(EXITED);
                put_uint(&mut b, *worker);
                put_uint(&mut b, zigzag(*code));
            }
            Msg::Shutdown { code } => {
                b.push(SHUTDOWN);
                put_uint(&mut b, zigzag(*code));
            }
            Msg::Bye => b.push(BYE),
            Msg::Bulk { worker, bytes } => {
                b.push(BULK);
                put_uint(&mut b, *worker);
                b.extend_from_slice(bytes);
            }
            Msg::Frame { worker, len } => {
                b.push(FRAME);
                put_uint(&mut b, *worker);
                put_uint(&mut b, *len);
            }
        }
        b
    }

    /// Parses a message; `Data` borrows its bytes from `buf`.
    pub(crate) fn decode(buf: &[u8]) -> Result<Msg<'_>> {
        let mut c = Cursor::new(buf);
        let msg = match c.u8()? {
            HELLO => {
                let cpus = c.usize()?;
                let host = c.string()?;
                let n = c.usize()?;
                let mut lines = Vec::with_capacity(n.min(4096));
                for _ in 0..n {
                    lines.push(c.string()?);
                }
                Msg::Hello(Hello { cpus, host, lines })
            }
            LAUNCH => {
                let worker = c.uint()?;
                let method = match c.u8()? {
                    0 => StartMethod::Fork,
                    1 => StartMethod::Spawn,
                    2 => StartMethod::ForkServer,
                    m => return Err(Error::protocol(format!("unknown start method {m}"))),
                };
                let init = match c.u8()? {
                    0 => None,
                    _ => Some((c.string()?, c.bytes()?.to_vec())),
                };
                let memory = (c.uint()?, c.uint()?);
                Msg::Launch {
                    worker,
                    spec: LaunchSpec {
                        method,
                        init,
                        memory,
                    },
                }
            }
            LAUNCHED => Msg::Launched {
                worker: c.uint()?,
                pid: unzigzag(c.uint()?)?,
            },
            LAUNCH_FAILED => Msg::LaunchFailed {
                worker: c.uint()?,
                message: c.string()?,
            },
            DATA => {
                let worker = c.uint()?;
                Msg::Data {
                    worker,
                    bytes: &buf[c.position()..],
                }
            }
            KILL => Msg::Kill { worker: c.uint()? },
            EXITED => Msg::Exited {
                worker: c.uint()?,
                code: unzigzag(c.uint()?)?,
            },
            SHUTDOWN => Msg::Shutdown {
                code: unzigzag(c.uint()?)?,
            },
            BYE => Msg::Bye,
            BULK => {
                let worker = c.uint()?;
                Msg::Bulk {
                    worker,
                    bytes: &buf[c.position()..],
                }
            }
            FRAME => Msg::Frame {
                worker: c.uint()?,
                len: c.uint()?,
            },
            k => return Err(Error::protocol(format!("unknown cluster message kind {k}"))),
        };
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_round_trips() {
        let spec = LaunchSpec {
            method: StartMethod::Spawn,
            init: Some(("m::init".into(), vec![1, 2, 3])),
            memory: (1 << 30, 2 << 30),
        };
        let all = [
            Msg::Hello(Hello {
                cpus: 8,
                host: "node1".into(),
                lines: vec!["a: fn(u64) -> u64".into(), "b".into()],
            }),
            Msg::Launch {
                worker: 7,
                spec: spec.clone(),
            },
            Msg::Launch {
                worker: 8,
                spec: LaunchSpec {
                    method: StartMethod::ForkServer,
                    init: None,
                    memory: (0, 0),
                },
            },
            Msg::Launched {
                worker: 7,
                pid: 4242,
            },
            Msg::LaunchFailed {
                worker: 9,
                message: "fork: EAGAIN".into(),
            },
            Msg::Data {
                worker: 300,
                bytes: &[0, 1, 2, 255],
            },
            Msg::Kill { worker: 1 },
            Msg::Exited {
                worker: 1,
                code: -9,
            },
            Msg::Shutdown { code: 101 },
            Msg::Shutdown { code: 0 },
            Msg::Bye,
            Msg::Frame {
                worker: 5,
                len: 1 << 20,
            },
            Msg::Bulk {
                worker: 6,
                bytes: &[9, 8, 7],
            },
        ];
        for m in &all {
            let bytes = m.encode();
            assert_eq!(&Msg::decode(&bytes).unwrap(), m);
        }
    }

    #[test]
    fn bad_messages_are_errors_not_panics() {
        assert!(Msg::decode(&[]).is_err());
        assert!(Msg::decode(&[99]).is_err());
        assert!(Msg::decode(&[LAUNCH, 1, 7]).is_err());
        assert!(Msg::decode(&[HELLO, 1, 200]).is_err());
        assert!(Msg::decode(&[EXITED, 1, 0xff, 0xff, 0xff, 0xff, 0x7f]).is_err());
    }
}
