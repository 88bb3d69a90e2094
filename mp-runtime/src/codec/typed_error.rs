//! Decoding a worker's `Err` value in the parent: [`WorkerError::decode`] is the codec's work, so
//! it lives here, and `WorkerError` itself stays plain data that [`Error`] can hold.

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::worker_error::WorkerError;

impl WorkerError {
    /// Decodes the error as `E`. [`Error::InvalidArgument`] if the worker's error is of another
    /// type, or if its type is not `Serialize` (then only its text came along); [`Error::Codec`]
    /// if the bytes do not decode.
    pub fn decode<E: DeserializeOwned>(&self) -> Result<E> {
        let wanted = std::any::type_name::<E>();
        if wanted != self.type_name() {
            return Err(Error::InvalidArgument {
                message: format!(
                    "cannot downcast the worker's error to `{wanted}`: the worker returned a `{}`",
                    self.type_name()
                ),
            });
        }
        let Some(bytes) = self.value_bytes() else {
            return Err(Error::InvalidArgument {
                message: format!(
                    "cannot downcast the worker's error to `{wanted}`: the type does not \
                     implement `serde::Serialize`, so only its text (the error's `message`) \
                     reached this process; derive `serde::Serialize` and `serde::Deserialize` \
                     for it to get the value back"
                ),
            });
        };
        super::decode(bytes, Vec::new())
    }
}
