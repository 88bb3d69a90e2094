//! What `#[mp::worker]` produces: a typed handle to a registered function, and the glue that runs
//! it in a child from bytes.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::os::fd::OwnedFd;
use std::sync::Mutex;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec;
use crate::error::Result;
use crate::worker_error::WorkerError;

/// A function that can run in another process.
///
/// Implemented by the constants `#[mp::worker]` generates: the name of a worker function is a
/// value of a type implementing `Worker`, so `Process::new(square, (5,))` is checked at compile
/// time: the argument tuple must be `Args`, and the parent receives an `Output`. A closure or a
/// function without the attribute is not a `Worker` (another process could not find it).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an mp worker",
    label = "expected a function marked `#[mp::worker]`",
    note = "mark the function with `#[mp::worker]` (a closure cannot be one: a worker must be \
            a named function that the child process finds by its name)"
)]
pub trait Worker: Copy + Send + Sync + 'static {
    /// The argument tuple, e.g. `(u64, String)`.
    type Args: Serialize + DeserializeOwned;
    /// What the parent receives: the return type, or `T` of a returned `Result<T, E>`.
    type Output: Serialize + DeserializeOwned;
    /// The registered name: module path, function name, and where the attribute stands
    /// (`module::square@12:1`), which tells apart workers of one name in different function
    /// bodies.
    fn name(&self) -> &'static str;
}

/// A worker of one argument, `(T,)`: what `map`, `imap`, `imap_unordered` and the executor's
/// `map` need, since they pass one input item per call. A worker of several arguments goes to
/// `starmap`, which takes whole argument tuples.
///
/// Implemented for every [`Worker`] whose `Args` is `(T,)`; `Args` is repeated as the trait's
/// parameter (bounds read `W: OneArg<W::Args, Arg = T>`) so that a compile error can name the
/// worker's arguments.
#[diagnostic::on_unimplemented(
    message = "this call passes one item per worker call, but the worker takes `{Args}`",
    label = "the worker's arguments are `{Args}`, not one argument",
    note = "for a worker of several arguments, use `starmap` (or `starmap_async`) with an \
            iterator of argument tuples; for a worker of none, use `apply`"
)]
pub trait OneArg<Args> {
    /// The argument's type, `T` of `(T,)`.
    type Arg;
}

// The bound sits on the worker, not on its argument tuple: with `(T,): OneArg` rustc would
// answer a worker of two arguments with "use a unary tuple instead: `map((add,), ..)`".
impl<W: Worker<Args = (T,)>, T> OneArg<(T,)> for W {
    type Arg = T;
}

/// The value `#[mp::worker]` defines in place of a function. It dereferences to the plain
/// function pointer, so `square(5)` still calls the function directly in this process.
pub struct WorkerFn<F, A, O> {
    name: &'static str,
    func: F,
    _types: PhantomData<fn(A) -> O>,
}

impl<F, A, O> WorkerFn<F, A, O> {
    #[doc(hidden)]
    pub const fn new(name: &'static str, func: F) -> Self {
        WorkerFn {
            name,
            func,
            _types: PhantomData,
        }
    }
}

impl<F: Copy, A, O> Clone for WorkerFn<F, A, O> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<F: Copy, A, O> Copy for WorkerFn<F, A, O> {}

impl<F, A, O> Deref for WorkerFn<F, A, O> {
    type Target = F;
    fn deref(&self) -> &F {
        &self.func
    }
}

impl<F, A, O> fmt::Debug for WorkerFn<F, A, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Worker({})", self.name)
    }
}

impl<F, A, O> Worker for WorkerFn<F, A, O>
where
    F: Copy + Send + Sync + 'static,
    A: Sendable + 'static,
    O: Sendable + 'static,
{
    type Args = A;
    type Output = O;
    fn name(&self) -> &'static str {
        self.name
    }
}

/// The subclass style of Python's `class P(Process): def run(self)`: a serializable value whose
/// `run` executes in the child. Register the impl with `#[mp::worker]` and start it with
/// [`Process::from_run`](crate::Process::from_run).
///
/// ```no_run
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Greeter { name: String }
///
/// #[mp::worker]
/// impl mp::Run for Greeter {
///     fn run(self) { println!("hello {}", self.name); }
/// }
///
/// #[mp::main]
/// fn main() -> mp::Result<()> {
///     let mut p = mp::Process::from_run(Greeter { name: "bob".into() });
///     p.start()?;
///     p.join()
/// }
/// ```
pub trait Run: Serialize + DeserializeOwned {
    /// The body of the child process.
    fn run(self);
}

/// Implemented by `#[mp::worker]` on an `impl Run for T`: the name `T` is registered under.
pub trait RegisteredRun: Run {
    #[doc(hidden)]
    const NAME: &'static str;
}

/// A worker's arguments as they arrive in the child.
#[doc(hidden)]
pub struct Input<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) fds: Vec<OwnedFd>,
    /// A pool chunk: `bytes` encode a `Vec` of argument tuples, and the worker's results go back
    /// as one `Vec`, or item by item when some failed ([`Outcome::Each`]).
    pub(crate) batch: bool,
}

/// What a worker run produced, before it is sent to the parent.
#[doc(hidden)]
pub enum Outcome {
    /// The encoded return value and the descriptors it carries.
    Returned { bytes: Vec<u8>, fds: Vec<OwnedFd> },
    /// The worker could not run: its arguments did not decode, its result could not be sent.
    Failed { message: String },
    /// The worker returned `Err`: its text, its type and value, and (in a pool chunk) the
    /// position of the item that failed.
    Raised {
        message: String,
        error: WorkerError,
        position: usize,
    },
    /// An argument did not decode, or the result did not encode (the type and the reason).
    Codec { message: String },
    /// An item of a pool chunk panicked (the message and `file:line:column`).
    Panicked { message: String, location: String },
    /// A pool chunk in which some items failed: one outcome per item, in order (none of them
    /// `Each`).
    Each(Vec<Outcome>),
}

/// The return type of a worker whose `Err` fails it: `Result<T, E>` (however it is spelled).
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `Result`, so `#[mp::worker]` cannot fail the worker on its `Err`",
    label = "not `std::result::Result<T, E>`",
    note = "a return type spelled `...Result<..>`, or `#[mp::worker(fallible)]`, makes a \
            returned `Err` fail the worker; to send this value back as it is, write \
            `#[mp::worker(fallible = false)]`"
)]
pub trait Fallible {
    type Ok;
    type Err: fmt::Display;
    fn into_result(self) -> std::result::Result<Self::Ok, Self::Err>;
}

impl<T, E: fmt::Display> Fallible for std::result::Result<T, E> {
    type Ok = T;
    type Err = E;
    fn into_result(self) -> std::result::Result<T, E> {
        self
    }
}

/// How a worker's `Err` is sent to the parent: always its text; its value too when the type is
/// `Serialize`. `#[mp::worker]` picks one at compile time through [`Probe`]: the
/// [`ErrorAsValue`] impl applies only to `Serialize` types and is found first, by autoref.
#[doc(hidden)]
pub struct ErrorCodec<E: ?Sized>(fn(&E) -> Option<Vec<u8>>);

/// A type-level question asked by generated code, answered by which trait's method applies
/// (see [`ErrorAsValue`] and [`ReturnsResult`]).
#[doc(hidden)]
pub struct Probe<T: ?Sized>(PhantomData<fn() -> PhantomData<T>>);

impl<T: ?Sized> Probe<T> {
    #[doc(hidden)]
    pub const fn new() -> Self {
        Probe(PhantomData)
    }
}

/// Chosen for an error type that is `Serialize`: the value travels, encoded.
#[doc(hidden)]
pub trait ErrorAsValue<E> {
    fn error_codec(self) -> ErrorCodec<E>;
}

impl<E: Serialize> ErrorAsValue<E> for &&Probe<E> {
    fn error_codec(self) -> ErrorCodec<E> {
        ErrorCodec(|e| match codec::encode(e) {
            // An error that carries OS handles travels as text only: its handles would need
            // descriptors passed alongside, which failure reports do not carry.
            Ok(enc) if enc.fds.is_empty() => Some(enc.bytes),
            _ => None,
        })
    }
}

/// Chosen for any other error type: only its text travels.
#[doc(hidden)]
pub trait ErrorAsText<E> {
    fn error_codec(self) -> ErrorCodec<E>;
}

impl<E> ErrorAsText<E> for &Probe<E> {
    fn error_codec(self) -> ErrorCodec<E> {
        ErrorCodec(|_| None)
    }
}

/// Answers "is this return type a `Result`?" for the check that a worker `#[mp::worker]`
/// treats as plain (its return type is not spelled `...Result<..>`) does not return a `Result`
/// under another name, which would make its `Err` arrive as a value.
#[doc(hidden)]
pub trait ReturnsResult {
    fn returns(self) -> IsResult;
}

impl<T, E> ReturnsResult for &&Probe<std::result::Result<T, E>> {
    fn returns(self) -> IsResult {
        IsResult
    }
}

/// The other answer of [`ReturnsResult`].
#[doc(hidden)]
pub trait ReturnsOther {
    fn returns(self) -> NotResult;
}

impl<T> ReturnsOther for &Probe<T> {
    fn returns(self) -> NotResult {
        NotResult
    }
}

/// A return type that is a `Result`.
#[doc(hidden)]
pub struct IsResult;

/// A return type that is not a `Result`.
#[doc(hidden)]
pub struct NotResult;

/// Implemented only by [`NotResult`]: generated code asks for it on a worker it treats as plain.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "this worker returns a `Result` under another name, and `#[mp::worker]` cannot \
               tell from the spelling whether a returned `Err` should fail it",
    label = "a `Result` (through an alias or another name)",
    note = "say which: `#[mp::worker(fallible)]` makes an `Err` fail the process or task (as \
            for `-> Result<T, E>`), `#[mp::worker(fallible = false)]` sends the whole `Result` \
            back as a value"
)]
pub trait PlainReturn {}

impl PlainReturn for NotResult {}

/// Compile-time check on a worker treated as plain (see [`PlainReturn`]).
#[doc(hidden)]
pub fn assert_plain_return<K: PlainReturn>(_: K) {}

fn decode_args<A: DeserializeOwned>(input: Input<'_>) -> Result<A> {
    codec::decode(input.bytes, input.fds)
}

thread_local! {
    /// A result buffer handed back by the pool's worker loop once it has copied the bytes out,
    /// so that a worker running many tasks does not allocate one per result.
    static RESULT_BUF: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Gives a result's buffer back for the next result of this thread.
pub(crate) fn recycle_result_buffer(mut buf: Vec<u8>) {
    buf.clear();
    RESULT_BUF.set(buf);
}

/// The last panic of this process's worker thread: message and location, recorded by the
/// panic hook (`process::worker_child`) for whoever catches the unwind.
static LAST_PANIC: Mutex<Option<(String, String)>> = Mutex::new(None);

/// Records a panic of the worker thread (called by the panic hook).
pub(crate) fn record_panic(message: String, location: String) {
    *LAST_PANIC.lock().unwrap_or_else(|p| p.into_inner()) = Some((message, location));
}

/// The message and location of the last panic recorded, taken.
pub(crate) fn take_panic() -> (String, String) {
    LAST_PANIC
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .unwrap_or_else(|| ("panic".into(), "<unknown>".into()))
}

/// The outcome of a panic just caught: what the hook recorded of it.
pub(crate) fn caught_panic() -> Outcome {
    let (message, location) = take_panic();
    Outcome::Panicked { message, location }
}

fn returned<T: Serialize>(value: &T) -> Outcome {
    let mut bytes = RESULT_BUF.take();
    bytes.clear();
    match codec::encode_owned_into(value, &mut bytes) {
        Ok(fds) => Outcome::Returned { bytes, fds },
        Err(e) => Outcome::Codec {
            message: format!("the worker's result could not be sent: {}", codec_reason(e)),
        },
    }
}

fn bad_args(e: crate::Error) -> Outcome {
    Outcome::Codec {
        message: format!(
            "the worker's arguments could not be decoded: {}",
            codec_reason(e)
        ),
    }
}

/// The reason of a codec error, without the "codec error:" its display adds.
fn codec_reason(e: crate::Error) -> String {
    match e {
        crate::Error::Codec { message, .. } => message,
        other => other.to_string(),
    }
}

/// Runs the items of a pool chunk. `step` runs one item: its value, or the outcome of its
/// failure (a returned `Err`). A panic fails the item that panicked; every other item runs.
/// When every item succeeds the results go back as one encoded `Vec`, as fast as a plain loop
/// (one `catch_unwind` around it all); otherwise, or if that `Vec` does not encode, as one
/// outcome per item ([`Outcome::Each`]), so that each failure is its item's alone.
fn run_chunk<A, R: Serialize>(
    (items, undecoded, spans): ChunkArgs<A>,
    mut step: impl FnMut(A) -> std::result::Result<R, Outcome>,
) -> Outcome {
    let mut values: Vec<R> = Vec::with_capacity(items.len());
    let mut failed: Vec<(usize, Outcome)> = Vec::new();
    let mut rest = items.into_iter();
    let timed = spans.and_then(|s| crate::pool::watchdog::active().map(|w| (w, s)));
    loop {
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for args in &mut rest {
                if let Some((w, spans)) = &timed {
                    let pos = values.len() + failed.len();
                    w.item(pos, spans.get(pos).copied().unwrap_or_default());
                }
                match step(args) {
                    Ok(v) => values.push(v),
                    Err(o) => failed.push((values.len() + failed.len(), o)),
                }
            }
        }));
        if ran.is_ok() {
            break;
        }
        failed.push((values.len() + failed.len(), caught_panic()));
    }
    if let Some((e, total)) = undecoded {
        // The items from the first that did not decode on: that one has the reason, the
        // others cannot be located in the bytes.
        let at = values.len() + failed.len();
        let reason = codec_reason(e);
        failed.push((
            at,
            Outcome::Codec {
                message: format!("the worker's arguments could not be decoded: {reason}"),
            },
        ));
        for i in at + 1..total {
            failed.push((
                i,
                Outcome::Codec {
                    message: format!(
                        "the worker's arguments could not be decoded: item {at} of the same \
                         chunk before it did not decode ({reason}), and where the items after \
                         it start cannot be told"
                    ),
                },
            ));
        }
    }
    if failed.is_empty() {
        let all = returned(&values);
        if !matches!(all, Outcome::Codec { .. }) {
            return all;
        }
    }
    let total = values.len() + failed.len();
    let mut each = Vec::with_capacity(total);
    let mut values = values.into_iter();
    let mut failed = failed.into_iter().peekable();
    for i in 0..total {
        match failed.next_if(|(at, _)| *at == i) {
            Some((_, o)) => each.push(o),
            None => match values.next() {
                Some(v) => each.push(returned(&v)),
                None => each.push(Outcome::Failed {
                    message: "the item produced no result".into(),
                }),
            },
        }
    }
    Outcome::Each(each)
}

/// Runs a chunk of a worker that cannot return `Err`, every argument decoded: the results as
/// one `Vec` in one `catch_unwind`. `starts(pos)` is called as each item starts (a time
/// limit's watchdog; nothing for an untimed chunk). If an item panics, the results so far are
/// kept, that item fails alone, and the rest run one by one.
fn run_plain_chunk<A, R: Serialize>(
    items: Vec<A>,
    mut f: impl FnMut(A) -> R,
    mut starts: impl FnMut(usize),
) -> Outcome {
    let mut values: Vec<R> = Vec::with_capacity(items.len());
    let mut rest = items.into_iter();
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for args in &mut rest {
            starts(values.len());
            values.push(f(args));
        }
    }));
    if ran.is_ok() {
        return match returned(&values) {
            // Some result does not encode: that one fails alone.
            Outcome::Codec { .. } => Outcome::Each(values.iter().map(returned).collect()),
            all => all,
        };
    }
    // The results so far, the panic, then the rest one by one.
    let mut each: Vec<Outcome> = values.iter().map(returned).collect();
    each.push(caught_panic());
    for args in rest {
        starts(each.len());
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(args))) {
            Ok(v) => each.push(returned(&v)),
            Err(_) => each.push(caught_panic()),
        }
    }
    Outcome::Each(each)
}

/// A chunk's argument tuples as decoded: those that decoded, the first error and the number of
/// items (if one did not), and where each item's bytes are (for a timed chunk).
type ChunkArgs<A> = (
    Vec<A>,
    Option<(crate::Error, usize)>,
    Option<Vec<(u64, u64)>>,
);

/// Decodes a chunk's argument tuples; under a time limit with where each one's bytes are, so
/// that the pool can send the others again if one runs out of time.
fn chunk_args<A: DeserializeOwned>(input: Input<'_>) -> ChunkArgs<A> {
    if crate::pool::watchdog::active().is_none() {
        let (items, undecoded) = decode_chunk_args(input);
        return (items, undecoded, None);
    }
    match codec::decode_seq_bounds::<A>(input.bytes, input.fds) {
        Ok((items, spans)) => (items, None, Some(spans)),
        Err(_) => {
            let (items, e, n) = codec::decode_seq_prefix::<A>(input.bytes, Vec::new());
            (items, e.map(|e| (e, n)), None)
        }
    }
}

/// Decodes the argument tuples of a pool chunk: all of them, or those before the first that
/// does not decode with its error and the number of items.
fn decode_chunk_args<A: DeserializeOwned>(
    input: Input<'_>,
) -> (Vec<A>, Option<(crate::Error, usize)>) {
    if input.fds.is_empty() {
        // Nothing is consumed by a failed attempt: it can be read again item by item.
        match codec::decode::<Vec<A>>(input.bytes, Vec::new()) {
            Ok(items) => return (items, None),
            Err(_) => {
                let (items, e, n) = codec::decode_seq_prefix::<A>(input.bytes, Vec::new());
                return (items, e.map(|e| (e, n)));
            }
        }
    }
    let bytes = input.bytes;
    let (items, e, n) = codec::decode_seq_prefix::<A>(bytes, input.fds);
    (items, e.map(|e| (e, n)))
}

/// Runs a worker that returns a plain value.
#[doc(hidden)]
pub fn call_plain<A: DeserializeOwned, R: Serialize>(
    input: Input<'_>,
    mut f: impl FnMut(A) -> R,
) -> Outcome {
    if input.batch {
        let args = chunk_args::<A>(input);
        return match args {
            // Every argument decoded: the plain loop, as fast as a `map`; only a panic (rare)
            // goes item by item.
            (items, None, None) => run_plain_chunk(items, f, |_| {}),
            (items, None, Some(spans)) => match crate::pool::watchdog::active() {
                Some(w) => run_plain_chunk(items, f, |pos| {
                    w.item(pos, spans.get(pos).copied().unwrap_or_default())
                }),
                None => run_plain_chunk(items, f, |_| {}),
            },
            args => run_chunk(args, |a| Ok(f(a))),
        };
    }
    match decode_args(input) {
        Ok(args) => returned(&f(args)),
        Err(e) => bad_args(e),
    }
}

/// The outcome of a worker that returned `Err(e)`, as item `position` of its task.
fn raised<E: fmt::Display>(e: &E, codec: &ErrorCodec<E>, position: usize) -> Outcome {
    Outcome::Raised {
        message: e.to_string(),
        error: WorkerError::new(std::any::type_name::<E>().to_owned(), (codec.0)(e)),
        position,
    }
}

/// Runs a worker that returns `Result<T, E>`: `Err` becomes a failure carrying `E`'s text and,
/// as `codec` says, its value.
#[doc(hidden)]
pub fn call_fallible<A: DeserializeOwned, R: Fallible>(
    input: Input<'_>,
    mut f: impl FnMut(A) -> R,
    codec: ErrorCodec<R::Err>,
) -> Outcome
where
    R::Ok: Serialize,
{
    if input.batch {
        return run_chunk(chunk_args::<A>(input), |a| {
            f(a).into_result().map_err(|e| raised(&e, &codec, 0))
        });
    }
    match decode_args(input) {
        Ok(args) => match f(args).into_result() {
            Ok(v) => returned(&v),
            Err(e) => raised(&e, &codec, 0),
        },
        Err(e) => bad_args(e),
    }
}

/// Compile-time check that a worker argument can cross a process boundary. Generated code calls
/// it spanned on the user's type so that the error points there.
#[doc(hidden)]
pub fn assert_arg<T: Sendable>() {}

/// Compile-time check on a worker's result type.
#[doc(hidden)]
pub fn assert_output<T: Sendable>() {}

/// Types that can be sent to, or returned from, a worker process.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be sent between processes",
    label = "this type must implement `serde::Serialize` and `serde::de::DeserializeOwned`",
    note = "derive them with `#[derive(serde::Serialize, serde::Deserialize)]`; mp handles \
            (Queue, Connection, Lock, ...) already implement both"
)]
pub trait Sendable: Serialize + DeserializeOwned {}

impl<T: Serialize + DeserializeOwned> Sendable for T {}

// `#[mp::worker]` checks each argument and result type with one method call,
// `(&&&&Probe::<T>::new()).assert_sendable()`, spanned on the user's type. Autoref picks the
// first impl that applies, so a type gets exactly one error, worded for what it lacks: a file or
// socket is told about `Handle` (not to derive serde on `File`), a type missing both serde
// traits gets one error for both. The entry glue goes through a probe too ([`EntryGlue`]), so a
// type that fails its check causes no second error inside generated code.

/// Chosen for a type that can be sent: nothing to report.
#[doc(hidden)]
pub trait SendableChecked {
    fn assert_sendable(self);
}

impl<T: Serialize + DeserializeOwned> SendableChecked for &&&&Probe<T> {
    fn assert_sendable(self) {}
}

/// Chosen for an OS resource (a file, socket, pipe: anything `AsFd`) that is not serde.
#[doc(hidden)]
pub trait SendableFd<T> {
    fn assert_sendable(self)
    where
        T: SentAsHandle;
}

impl<T: std::os::fd::AsFd> SendableFd<T> for &&&Probe<T> {
    fn assert_sendable(self)
    where
        T: SentAsHandle,
    {
    }
}

/// Chosen for a type that is `Serialize` but not `DeserializeOwned`.
#[doc(hidden)]
pub trait SendableHalf<T> {
    fn assert_sendable(self)
    where
        T: DeserializeToo;
}

impl<T: Serialize> SendableHalf<T> for &&Probe<T> {
    fn assert_sendable(self)
    where
        T: DeserializeToo,
    {
    }
}

/// Chosen for any other type: it is not `Serialize`.
#[doc(hidden)]
pub trait SendableNot<T> {
    fn assert_sendable(self)
    where
        T: SerializeAndDeserialize;
}

impl<T> SendableNot<T> for &Probe<T> {
    fn assert_sendable(self)
    where
        T: SerializeAndDeserialize,
    {
    }
}

/// What a file or socket in a worker's signature is asked for: only [`Handle`](crate::Handle)
/// has it, which is the hint.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` is an OS resource, which cannot be sent between processes as data",
    label = "use `mp::Handle` here, which travels as a file descriptor",
    note = "`mp::Handle::from(std::os::fd::OwnedFd::from(file))` makes one; the receiver gets \
            the same open file, socket or pipe back with `File::from(OwnedFd::from(handle))`"
)]
pub trait SentAsHandle {}

impl SentAsHandle for crate::Handle {}

/// Asked of a `Serialize` type that is not `DeserializeOwned` (one leaf, so one error).
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be sent between processes",
    label = "this type implements `serde::Serialize` but not `serde::de::DeserializeOwned`",
    note = "derive it with `#[derive(serde::Deserialize)]`, without borrowed fields"
)]
pub trait DeserializeToo {}

impl<T: DeserializeOwned> DeserializeToo for T {}

/// Asked of a type that is not `Serialize`: only `Serialize` is required, so that a type
/// lacking both traits gets one error, which names both.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be sent between processes",
    label = "this type must implement `serde::Serialize` and `serde::de::DeserializeOwned`",
    note = "derive them with `#[derive(serde::Serialize, serde::Deserialize)]`; mp handles \
            (Queue, Connection, Lock, ...) already implement both"
)]
pub trait SerializeAndDeserialize {}

impl<T: Serialize> SerializeAndDeserialize for T {}

/// The entry glue of a worker whose argument tuple `A` and result `R` (the `Ok` type of a
/// fallible one) can be sent: decodes, calls, encodes.
#[doc(hidden)]
pub trait EntryGlue<A, R> {
    fn call_plain(self, input: Input<'_>, f: impl FnMut(A) -> R) -> Outcome;
    fn call_fallible<F: Fallible<Ok = R>>(
        self,
        input: Input<'_>,
        f: impl FnMut(A) -> F,
        codec: ErrorCodec<F::Err>,
    ) -> Outcome;
}

impl<A: DeserializeOwned, R: Serialize> EntryGlue<A, R> for &&Probe<(A, R)> {
    fn call_plain(self, input: Input<'_>, f: impl FnMut(A) -> R) -> Outcome {
        call_plain(input, f)
    }
    fn call_fallible<F: Fallible<Ok = R>>(
        self,
        input: Input<'_>,
        f: impl FnMut(A) -> F,
        codec: ErrorCodec<F::Err>,
    ) -> Outcome {
        call_fallible(input, f, codec)
    }
}

/// The glue of a worker with a type that cannot be sent. That type's check has already failed
/// the build, so this never runs; it exists so that the build reports that check alone.
#[doc(hidden)]
pub trait EntryUnsendable<A, R> {
    fn call_plain(self, input: Input<'_>, f: impl FnMut(A) -> R) -> Outcome;
    fn call_fallible<F: Fallible<Ok = R>>(
        self,
        input: Input<'_>,
        f: impl FnMut(A) -> F,
        codec: ErrorCodec<F::Err>,
    ) -> Outcome;
}

impl<A, R> EntryUnsendable<A, R> for &Probe<(A, R)> {
    fn call_plain(self, _: Input<'_>, _: impl FnMut(A) -> R) -> Outcome {
        unsendable()
    }
    fn call_fallible<F: Fallible<Ok = R>>(
        self,
        _: Input<'_>,
        _: impl FnMut(A) -> F,
        _: ErrorCodec<F::Err>,
    ) -> Outcome {
        unsendable()
    }
}

fn unsendable() -> Outcome {
    Outcome::Failed {
        message: "the worker's types cannot be sent between processes".to_owned(),
    }
}
