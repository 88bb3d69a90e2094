//! Rank 0's side: the MPI thread that joins the pools' schedulers to the node agents, and how
//! other threads ask things of it.
//!
//! Each remote worker's stream is a [`Relay`] in memory on rank 0: the scheduler writes jobs
//! into it (through `remote::RemoteLink`) and reads answers from it as from a local worker's
//! socket, and this thread sends what was written to the worker's agent as `Data` messages and
//! queues what the agent sends back, in order. When the agent reports the worker's exit, the
//! stream ends after the last answer and then the worker's exit cell (its sentinel) is set: the
//! scheduler reads every answer the worker gave before it learns of its death, as with a local
//! process.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, mpsc};
use std::time::{Duration, Instant};

use nix::sys::eventfd::{EfdFlags, EventFd};

use super::messages::{Hello, LaunchSpec, Msg};
use super::mpi_io::{Backoff, Comm, HEAD_SPIN, Waiting};
use super::relay::{Outgoing, Relay};
use super::wake::Waker;
use crate::error::{Error, Result};
use crate::transport::reader::RawFrame;

/// How long the agents have to say goodbye when `main` ended.
const BYE_TIMEOUT: Duration = Duration::from_secs(30);

/// What rank 0's MPI thread shares with the threads that use the cluster.
pub(crate) struct Head {
    /// The number of ranks in the job (agents: `size - 1`).
    pub(crate) size: usize,
    state: Mutex<State>,
    changed: Condvar,
    waker: Arc<Waker>,
}

#[derive(Default)]
struct State {
    commands: Vec<Command>,
    hellos: BTreeMap<usize, Hello>,
    /// Why the MPI thread ended, once it has.
    ended: Option<String>,
}

/// What other threads ask of the MPI thread.
pub(crate) enum Command {
    /// Start a worker on `agent`, whose stream is `relay` and whose end goes to `exit`.
    Launch {
        worker: u64,
        agent: usize,
        spec: LaunchSpec,
        relay: Arc<Relay>,
        exit: Arc<ExitCell>,
        reply: mpsc::Sender<std::result::Result<i32, String>>,
    },
    /// Kill a worker (SIGKILL on its node).
    Kill { worker: u64, agent: usize },
    /// `main` ended with `code`: stop the agents and MPI.
    Finish { code: i32 },
}

static HEAD: OnceLock<Arc<Head>> = OnceLock::new();

/// Rank 0's head, if this process is rank 0 of an MPI job that `#[mp::main]` joined.
pub(crate) fn installed() -> Option<Arc<Head>> {
    HEAD.get().cloned()
}

pub(crate) fn install(head: Arc<Head>) {
    let _ = HEAD.set(head);
}

impl Head {
    pub(crate) fn new(size: usize) -> Result<Arc<Head>> {
        Ok(Arc::new(Head {
            size,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            waker: Arc::new(Waker::new()?),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands `command` to the MPI thread; the text says why not if it has ended.
    pub(crate) fn ask(&self, command: Command) -> std::result::Result<(), String> {
        let mut st = self.lock();
        if let Some(why) = &st.ended {
            return Err(why.clone());
        }
        st.commands.push(command);
        drop(st);
        self.waker.wake();
        Ok(())
    }

    /// Every agent's `Hello`, waiting up to `timeout` for those that have not come yet.
    pub(crate) fn hellos(&self, timeout: Duration) -> Result<BTreeMap<usize, Hello>> {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        loop {
            if st.hellos.len() + 1 >= self.size {
                return Ok(st.hellos.clone());
            }
            if let Some(why) = &st.ended {
                return Err(Error::PoolBroken {
                    message: format!("the cluster has ended: {why}"),
                });
            }
            let now = Instant::now();
            if now >= deadline {
                let missing: Vec<String> = (1..self.size)
                    .filter(|r| !st.hellos.contains_key(r))
                    .map(|r| r.to_string())
                    .collect();
                return Err(Error::NoClusterPeers {
                    hint: format!(
                        "node agents on ranks {} did not report within {timeout:?}; are those \
                         ranks running this program under #[mp::main]?",
                        missing.join(", ")
                    ),
                });
            }
            st = self
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Ends the MPI thread: the agents exit with `code`.
    pub(crate) fn finish(&self, code: i32) {
        let _ = self.ask(Command::Finish { code });
    }

    /// What a relay wakes the MPI thread with.
    pub(crate) fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }
}

/// Where a remote worker's exit becomes known on rank 0: its code, and a descriptor that is
/// readable from then on (the worker's sentinel for the scheduler).
pub(crate) struct ExitCell {
    code: Mutex<Option<i32>>,
    cv: Condvar,
    fd: EventFd,
}

impl ExitCell {
    pub(crate) fn new() -> Result<ExitCell> {
        Ok(ExitCell {
            code: Mutex::new(None),
            cv: Condvar::new(),
            fd: EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                .map_err(|e| Error::io("eventfd", e))?,
        })
    }

    /// Records the exit (the first one counts).
    pub(crate) fn set(&self, code: i32) {
        let mut c = self.code.lock().unwrap_or_else(|p| p.into_inner());
        if c.is_none() {
            *c = Some(code);
            let _ = self.fd.write(1);
        }
        drop(c);
        self.cv.notify_all();
    }

    pub(crate) fn is_set(&self) -> bool {
        self.code
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// The exit code, waiting up to `timeout` for it.
    pub(crate) fn wait(&self, timeout: Duration) -> Option<i32> {
        let c = self.code.lock().unwrap_or_else(|p| p.into_inner());
        let (c, _) = self
            .cv
            .wait_timeout_while(c, timeout, |c| c.is_none())
            .unwrap_or_else(|p| p.into_inner());
        *c
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// One remote worker's stream, as the MPI thread holds it.
struct Route {
    agent: usize,
    relay: Arc<Relay>,
    exit: Arc<ExitCell>,
    /// Waiting for the agent's answer to the launch.
    reply: Option<mpsc::Sender<std::result::Result<i32, String>>>,
    /// Bytes went to the worker since it last sent any: an answer is awaited.
    awaiting: bool,
}

/// The MPI thread of rank 0, until `main` ends.
pub(crate) fn run(mut comm: Comm, head: Arc<Head>) {
    let mut routes: HashMap<u64, Route> = HashMap::new();
    let mut backoff = Backoff::new(HEAD_SPIN);
    let code = 'run: loop {
        let mut busy = false;
        let commands = std::mem::take(&mut head.lock().commands);
        for c in commands {
            busy = true;
            match c {
                Command::Launch {
                    worker,
                    agent,
                    spec,
                    relay,
                    exit,
                    reply,
                } => {
                    comm.send(agent, Msg::Launch { worker, spec }.encode());
                    routes.insert(
                        worker,
                        Route {
                            agent,
                            relay,
                            exit,
                            reply: Some(reply),
                            awaiting: true,
                        },
                    );
                }
                Command::Kill { worker, agent } => comm.send(agent, Msg::Kill { worker }.encode()),
                Command::Finish { code } => break 'run code,
            }
        }
        while let Some((from, bytes)) = comm.try_recv() {
            busy = true;
            receive(&head, &mut comm, &mut routes, from, bytes);
        }
        // Said before the relays are looked at: bytes written after this are seen now or at the
        // next round, which `Waker::sleep` then does not sleep before.
        head.waker.looking();
        for r in routes.values_mut() {
            for out in r.relay.take_outgoing() {
                busy = true;
                r.awaiting = true;
                match out {
                    Outgoing::Data(msg) => comm.send(r.agent, msg),
                    Outgoing::Shared { bulk, items } => {
                        comm.send(r.agent, bulk);
                        comm.send_shared(r.agent, items);
                    }
                }
            }
        }
        // A send in progress bounds the wait, but is no activity to spin for (`SENDING_WAIT`).
        let sending = comm.progress();
        if busy {
            backoff.active();
        }
        let waiting = Waiting {
            answer: routes.values().any(|r| r.awaiting),
            spin: true,
            sending,
        };
        head.waker.sleep(backoff.next_wait(waiting));
    };
    for agent in 1..comm.size {
        comm.send(agent, Msg::Shutdown { code }.encode());
    }
    // Everything the agents still send is received (their `Bye` comes last), so that no message
    // is left unreceived when MPI is finalized.
    let mut byes = 0;
    let deadline = Instant::now() + BYE_TIMEOUT;
    while byes + 1 < comm.size && Instant::now() < deadline {
        match comm.try_recv() {
            Some((_, bytes)) if matches!(Msg::decode(&bytes), Ok(Msg::Bye)) => byes += 1,
            Some((from, bytes)) => receive(&head, &mut comm, &mut routes, from, bytes),
            None => {
                comm.progress();
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }
    comm.flush();
    let leftovers = {
        let mut st = head.lock();
        st.ended = Some(format!("main returned (exit code {code})"));
        std::mem::take(&mut st.commands)
    };
    head.changed.notify_all();
    // Launches asked for too late fail when their reply channel drops with the commands.
    drop(leftovers);
    for (_, r) in routes.drain() {
        r.relay.end();
        r.exit.set(crate::process::child::UNKNOWN_EXITCODE);
    }
    drop(comm);
}

/// Handles one message from an agent.
fn receive(
    head: &Head,
    comm: &mut Comm,
    routes: &mut HashMap<u64, Route>,
    from: usize,
    bytes: Vec<u8>,
) {
    let msg = match Msg::decode(&bytes) {
        Ok(m) => m,
        Err(e) => {
            crate::sys::stderr_line(&format!("mp: bad message from rank {from} ignored: {e}"));
            return;
        }
    };
    match msg {
        Msg::Hello(h) => {
            head.lock().hellos.insert(from, h);
            head.changed.notify_all();
        }
        Msg::Launched { worker, pid } => {
            let taken = routes
                .get_mut(&worker)
                .and_then(|r| r.reply.take())
                .is_some_and(|reply| reply.send(Ok(pid)).is_ok());
            if !taken {
                // Nobody waits for this worker any more (the launch timed out): stop it.
                comm.send(from, Msg::Kill { worker }.encode());
            }
        }
        Msg::LaunchFailed { worker, message } => {
            if let Some(mut r) = routes.remove(&worker)
                && let Some(reply) = r.reply.take()
            {
                let _ = reply.send(Err(message));
            }
        }
        Msg::Data {
            worker,
            bytes: data,
        } => {
            if let Some(r) = routes.get_mut(&worker) {
                r.awaiting = false;
                r.relay.deliver_data(data);
            }
        }
        Msg::Frame { worker, len } => {
            // The payload is the next message from this agent, whoever it is for.
            let payload = comm.recv_from(from);
            if let Some(r) = routes.get_mut(&worker) {
                r.awaiting = false;
                if payload.len() as u64 == len {
                    r.relay.deliver([RawFrame {
                        payload,
                        fds: Vec::new(),
                    }]);
                } else {
                    r.relay.break_stream(format!(
                        "a frame announced {len} bytes but {} came",
                        payload.len()
                    ));
                }
            }
        }
        Msg::Exited { worker, code } => {
            if let Some(r) = routes.remove(&worker) {
                // Everything the worker sent came before: its stream ends, then its death is
                // known.
                r.relay.end();
                r.exit.set(code);
            }
        }
        other => crate::sys::stderr_line(&format!(
            "mp: unexpected message from rank {from} ignored: {other:?}"
        )),
    }
}
