//! How a command fails: an error with the exit code it maps to.

/// An error with the exit code it maps to (see `cli::EXIT_CODES`).
#[derive(Debug)]
pub struct Fail {
    pub code: u8,
    pub err: anyhow::Error,
}

pub trait FailCode<T> {
    fn code(self, code: u8) -> Result<T, Fail>;
}

impl<T, E: Into<anyhow::Error>> FailCode<T> for Result<T, E> {
    fn code(self, code: u8) -> Result<T, Fail> {
        self.map_err(|e| Fail {
            code,
            err: e.into(),
        })
    }
}

pub const EXIT_RUNTIME: u8 = 1;
pub const EXIT_CONFIG: u8 = 2;
pub const EXIT_CERT: u8 = 3;
pub const EXIT_BIND: u8 = 4;
pub const EXIT_NO_NODE: u8 = 5;
pub const EXIT_STORAGE: u8 = 6;
