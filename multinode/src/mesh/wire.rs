//! The message layer's wire format: each message is one frame of tokio-util's
//! length-delimited codec (a 4-byte big-endian length, then the message's
//! postcard encoding), with a maximum size. The local streams carry these
//! frames; so would any other route between nodes.

use bytes::{BufMut, BytesMut};
use serde::Serialize;
use tokio_util::codec::LengthDelimitedCodec;

use super::send_error::SendError;

/// The largest buffer an outgoing queue keeps once a burst is through, or an
/// incoming stream once its frames are: room for the next messages, not for
/// ever the largest burst.
pub(super) const KEEP_CAPACITY: usize = 1024 * 1024;

/// The bytes of a frame's length prefix: the message's own bytes follow.
pub(super) const LENGTH: usize = 4;

/// Settings of the message layer; the same in every node (the body is the same
/// code everywhere).
///
/// ```
/// let options = multinode::mesh::Options::new()
///     .max_frame_len(64 * 1024)
///     .queue(256);
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub(super) max_frame_len: usize,
    pub(super) queue: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_frame_len: 1024 * 1024,
            queue: 1024,
        }
    }
}

impl Options {
    /// The defaults: frames up to 1 MiB, 1024 messages queued per node.
    ///
    /// ```
    /// let options = multinode::mesh::Options::new();
    /// # let _ = options;
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// The largest frame body, for whoever cuts its messages to fit.
    pub(crate) fn frame_limit(&self) -> usize {
        self.max_frame_len
    }

    /// The largest encoded message, in bytes (default 1 MiB; at most 4 GiB − 1,
    /// the length prefix having 4 bytes). A larger one is a
    /// [`SendError::TooLarge`] for the sender; a frame announcing more closes the
    /// stream it came on.
    ///
    /// ```
    /// let options = multinode::mesh::Options::new().max_frame_len(4096);
    /// # let _ = options;
    /// ```
    pub fn max_frame_len(mut self, bytes: usize) -> Self {
        self.max_frame_len = bytes.clamp(1, u32::MAX as usize);
        self
    }

    /// How many messages may wait for each node (default 1024). Past that,
    /// `send` waits and `try_send` fails. (Incoming messages wait in the
    /// streams' socket buffers until [`Receiver::recv`](super::Receiver::recv) reads them.)
    ///
    /// ```
    /// let options = multinode::mesh::Options::new().queue(64);
    /// # let _ = options;
    /// ```
    pub fn queue(mut self, messages: usize) -> Self {
        self.queue = messages.max(1);
        self
    }

    pub(super) fn codec(&self) -> LengthDelimitedCodec {
        LengthDelimitedCodec::builder()
            .max_frame_length(self.max_frame_len)
            .new_codec()
    }
}

/// Appends `message` to `buffer` as one frame of tokio-util's length-delimited
/// codec as [`Options::codec`] reads it (a 4-byte big-endian length, then the
/// postcard encoding), written in place: no copy and no allocation of its own.
/// Nothing of a message over `max` bytes is kept beyond `max`; the caller takes
/// back what was appended on error.
pub(super) fn write_frame<M: Serialize>(
    message: &M,
    max: usize,
    buffer: &mut BytesMut,
) -> Result<(), SendError> {
    let start = buffer.len();
    buffer.put_u32(0); // the length, written below
    let mut body = Bounded {
        buffer: &mut *buffer,
        room: max,
        len: 0,
    };
    postcard::to_io(message, &mut body).map_err(|e| SendError::Encode(e.to_string()))?;
    let len = body.len;
    if len > max {
        return Err(SendError::TooLarge { len, max });
    }
    let prefix = u32::try_from(len).expect("max_frame_len fits the 4-byte length");
    buffer[start..start + 4].copy_from_slice(&prefix.to_be_bytes());
    Ok(())
}

/// Appends to a buffer up to `room` bytes, and counts every byte written.
struct Bounded<'a> {
    buffer: &'a mut BytesMut,
    room: usize,
    len: usize,
}

impl std::io::Write for Bounded<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.len + bytes.len() <= self.room {
            self.buffer.extend_from_slice(bytes);
        }
        self.len += bytes.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::codec::Decoder;

    #[test]
    fn an_oversized_length_prefix_allocates_nothing() {
        let mut codec = Options::new().max_frame_len(1024).codec();
        let mut buf = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
        assert!(codec.decode(&mut buf).is_err());
        assert!(buf.capacity() < 1024);
    }

    #[test]
    fn frames_are_what_the_codec_reads() {
        let options = Options::new().max_frame_len(64);
        let mut buffer = BytesMut::new();
        let texts = ["", "one", "a longer message of some forty bytes....."];
        for text in texts {
            write_frame(&text, 64, &mut buffer).unwrap();
        }
        let too_large = "x".repeat(100);
        assert_eq!(
            write_frame(&too_large, 64, &mut BytesMut::new()),
            Err(SendError::TooLarge { len: 101, max: 64 })
        );
        let mut codec = options.codec();
        for text in texts {
            let frame = codec.decode(&mut buffer).unwrap().expect("a whole frame");
            assert_eq!(postcard::from_bytes::<&str>(&frame).unwrap(), text);
        }
        assert!(buffer.is_empty());
    }
}
