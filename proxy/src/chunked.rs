//! An incremental framer for chunked message bodies (RFC 9112 §7.1).
//!
//! The proxy forwards a chunked body as it arrives, without decoding or
//! buffering it: [`ChunkedDecoder::feed`] says how many of the bytes it is
//! given belong to the current body (chunk-size lines, extensions, data,
//! the last chunk and the trailer section included) and whether the body
//! ended there. Bytes after the end belong to the next message.
//!
//! The state is a few integers: chunk data is skipped by counting, and
//! size lines and trailers are checked byte by byte, never stored. Size
//! lines are bounded by [`MAX_SIZE_LINE`] and the trailer section by
//! [`MAX_TRAILERS`] so that a peer cannot keep the framer reading forever
//! without making progress through the body.
//!
//! The grammar is enforced strictly, because a framer that disagrees with
//! the backend on where a chunk ends lets a client smuggle a request: hex
//! sizes without sign or `0x`, CRLF only, whitespace only before `;`.

use crate::http::{is_field_byte, is_tchar};

/// The longest chunk-size line (size, extensions), CRLF excluded.
pub const MAX_SIZE_LINE: usize = 4096;
/// The longest trailer section, its closing CRLF included.
pub const MAX_TRAILERS: usize = 16 * 1024;

/// Why a chunked body was refused. The body's end is unknown: the connection
/// must be closed. The decoder stays failed and answers the same error again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body at byte {at}: {reason}")]
pub struct ChunkedError {
    /// Offset of the offending byte from the start of the body.
    pub at: u64,
    pub reason: &'static str,
}

/// How far one [`ChunkedDecoder::feed`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// How many bytes from the front of the fed buffer belong to the body.
    /// Equal to the buffer's length unless `done`.
    pub consumed: usize,
    /// The body ended after `consumed` bytes.
    pub done: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex digits of a chunk size (`any`: at least one read).
    Size {
        any: bool,
    },
    /// Whitespace after the size; only `;` may follow.
    SizeWs,
    /// Inside chunk extensions, up to CR.
    Ext,
    /// After the size line's CR.
    SizeLf,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line, or of the final CRLF.
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    FinalLf,
    Done,
    Failed(ChunkedError),
}

/// Frames one chunked body; make a new one for each message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkedDecoder {
    state: State,
    /// The chunk size being read.
    size: u64,
    /// Bytes of the current size line, or of the trailer section.
    line_len: usize,
    /// Bytes of the body seen so far, for error offsets.
    offset: u64,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::Size { any: false },
            size: 0,
            line_len: 0,
            offset: 0,
        }
    }

    /// Whether the whole body, trailers included, has been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Bytes of the body seen so far.
    pub fn body_len(&self) -> u64 {
        self.offset
    }

    /// Takes the next bytes of the stream. Once `done`, further calls
    /// consume nothing and stay done.
    pub fn feed(&mut self, buf: &[u8]) -> Result<Progress, ChunkedError> {
        let mut i = 0;
        let result = self.run(buf, &mut i);
        // usize to u64 never truncates on the platforms Rust supports.
        self.offset += i as u64;
        match result {
            Ok(()) => Ok(Progress {
                consumed: i,
                done: self.state == State::Done,
            }),
            Err(reason) => {
                let err = ChunkedError {
                    at: self.offset,
                    reason,
                };
                self.state = State::Failed(err);
                Err(err)
            }
        }
    }

    /// Advances over `buf[*i..]`; on error `*i` is the offending byte.
    fn run(&mut self, buf: &[u8], i: &mut usize) -> Result<(), &'static str> {
        while *i < buf.len() {
            let b = buf[*i];
            self.state = match self.state {
                State::Failed(e) => return Err(e.reason),
                State::Done => return Ok(()),
                State::Data(left) => {
                    let avail = buf.len() - *i;
                    // min() keeps the step within `avail`, a usize.
                    let step = left.min(avail as u64) as usize;
                    *i += step;
                    let left = left - step as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data(left)
                    };
                    continue;
                }
                State::Size { any } => {
                    self.count_size_line(b)?;
                    if let Some(d) = hex_value(b) {
                        if self.size > u64::MAX >> 4 {
                            return Err("chunk size overflows 64 bits");
                        }
                        self.size = (self.size << 4) | u64::from(d);
                        State::Size { any: true }
                    } else if !any {
                        return Err("chunk size must start with a hex digit");
                    } else {
                        match b {
                            b'\r' => State::SizeLf,
                            b';' => State::Ext,
                            b' ' | b'\t' => State::SizeWs,
                            _ => return Err("invalid character after chunk size"),
                        }
                    }
                }
                State::SizeWs => {
                    self.count_size_line(b)?;
                    match b {
                        b' ' | b'\t' => State::SizeWs,
                        b';' => State::Ext,
                        _ => return Err("only ';' may follow whitespace after a chunk size"),
                    }
                }
                State::Ext => {
                    self.count_size_line(b)?;
                    match b {
                        b'\r' => State::SizeLf,
                        b if is_field_byte(b) => State::Ext,
                        _ => return Err("invalid character in chunk extension"),
                    }
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err("chunk-size line not ended by CRLF");
                    }
                    self.line_len = 0;
                    if self.size == 0 {
                        State::TrailerStart
                    } else {
                        let size = self.size;
                        self.size = 0;
                        State::Data(size)
                    }
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err("chunk data not followed by CRLF");
                    }
                    State::DataLf
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err("chunk data not followed by CRLF");
                    }
                    State::Size { any: false }
                }
                State::TrailerStart => {
                    self.count_line(MAX_TRAILERS, "trailer section too long")?;
                    match b {
                        b'\r' => State::FinalLf,
                        b if is_tchar(b) => State::TrailerName,
                        _ => return Err("invalid trailer field"),
                    }
                }
                State::TrailerName => {
                    self.count_line(MAX_TRAILERS, "trailer section too long")?;
                    match b {
                        b':' => State::TrailerValue,
                        b if is_tchar(b) => State::TrailerName,
                        _ => return Err("invalid character in trailer field name"),
                    }
                }
                State::TrailerValue => {
                    self.count_line(MAX_TRAILERS, "trailer section too long")?;
                    match b {
                        b'\r' => State::TrailerLf,
                        b if is_field_byte(b) => State::TrailerValue,
                        _ => return Err("invalid character in trailer field value"),
                    }
                }
                State::TrailerLf => {
                    self.count_line(MAX_TRAILERS, "trailer section too long")?;
                    if b != b'\n' {
                        return Err("trailer field not ended by CRLF");
                    }
                    State::TrailerStart
                }
                State::FinalLf => {
                    if b != b'\n' {
                        return Err("chunked body not ended by CRLF");
                    }
                    *i += 1;
                    self.state = State::Done;
                    return Ok(());
                }
            };
            *i += 1;
        }
        match &self.state {
            State::Failed(e) => Err(e.reason),
            _ => Ok(()),
        }
    }

    /// Counts a byte of a size line; the closing CR is not part of it.
    fn count_size_line(&mut self, b: u8) -> Result<(), &'static str> {
        if b == b'\r' {
            return Ok(());
        }
        self.count_line(MAX_SIZE_LINE, "chunk-size line too long")
    }

    fn count_line(&mut self, max: usize, reason: &'static str) -> Result<(), &'static str> {
        self.line_len += 1;
        if self.line_len > max {
            Err(reason)
        } else {
            Ok(())
        }
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}
