//! Error kinds that decide the exit code: input and usage errors exit 2, everything else 1.

use std::fmt;

/// A problem with what the user gave us: a file, a flag, a folder. The message names the
/// file, line or field and says what was expected. The CLI exits 2 on it.
#[derive(Debug, Clone, PartialEq)]
pub struct InputError(pub String);

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InputError {}

/// Build an [`InputError`] as an `anyhow::Error`.
pub fn input_error(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(InputError(message.into()))
}

/// True when any error in the chain is an [`InputError`].
pub fn is_input_error(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|e| e.downcast_ref::<InputError>().is_some())
}

/// `bail!` for input errors.
#[macro_export]
macro_rules! input_bail {
    ($($arg:tt)*) => { return Err($crate::error::input_error(format!($($arg)*))) };
}
