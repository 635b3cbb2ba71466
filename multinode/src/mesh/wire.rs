//! The message layer's wire format: each message is one frame of tokio-util's
//! length-delimited codec (a 4-byte big-endian length, then the message's
//! postcard encoding), with a maximum size. The local streams carry these
//! frames; so would any other route between nodes. Frames are written and cut
//! here, in place in the streams' buffers (the tests check that tokio-util's
//! codec reads them alike): cutting them with that codec split each one off
//! its buffer, a reference count and two pointer moves a message.

use bytes::{Buf, BufMut, BytesMut};
use serde::Serialize;

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

    #[cfg(test)]
    pub(super) fn codec(&self) -> tokio_util::codec::LengthDelimitedCodec {
        tokio_util::codec::LengthDelimitedCodec::builder()
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
    let body = Bounded {
        buffer: &mut *buffer,
        room: max,
        len: 0,
    };
    let len = postcard::serialize_with_flavor(message, body)
        .map_err(|e| SendError::Encode(e.to_string()))?;
    if len > max {
        return Err(SendError::TooLarge { len, max });
    }
    let prefix = u32::try_from(len).expect("max_frame_len fits the 4-byte length");
    buffer[start..start + 4].copy_from_slice(&prefix.to_be_bytes());
    Ok(())
}

/// The frame at the front of `bytes`, as [`write_frame`] writes it: the length
/// of its body (which follows the [`LENGTH`] bytes of its prefix) once all of it
/// is there, `None` while more must be read, or the error if it announces more
/// than `max` bytes.
#[inline]
pub(super) fn frame_len(bytes: &[u8], max: usize) -> Result<Option<usize>, FrameTooLarge> {
    let Some(prefix) = bytes.first_chunk::<LENGTH>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*prefix) as usize;
    if len > max {
        return Err(FrameTooLarge { len, max });
    }
    Ok((bytes.len() - LENGTH >= len).then_some(len))
}

/// A stream's read buffer, and the frames cut from it in place: a frame's body
/// is given where it lies, and the bytes of the frames given go at the next
/// read (the buffer moves once a read, not once a frame).
pub(super) struct Frames {
    buffer: BytesMut,
    /// Where the frames not yet given start.
    start: usize,
    /// The longest frame body the stream may announce.
    max: usize,
}

impl Frames {
    pub fn new(max: usize) -> Self {
        Frames {
            buffer: BytesMut::new(),
            start: 0,
            max,
        }
    }

    /// The next frame's body, once all of it was read; the error if it
    /// announces more than `max` bytes.
    #[inline]
    pub fn next(&mut self) -> Result<Option<&[u8]>, FrameTooLarge> {
        let Some(len) = frame_len(&self.buffer[self.start..], self.max)? else {
            return Ok(None);
        };
        let at = self.start + LENGTH;
        self.start = at + len;
        Ok(Some(&self.buffer[at..at + len]))
    }

    /// The buffer, ready for a read: without the frames given, with room for
    /// `chunk` bytes or for the rest of a frame begun, if that is longer (never
    /// for one over `max`, which [`next`](Self::next) refuses).
    pub fn for_reading(&mut self, chunk: usize) -> &mut BytesMut {
        self.buffer.advance(std::mem::take(&mut self.start));
        if self.buffer.is_empty() && self.buffer.capacity() > KEEP_CAPACITY {
            self.buffer = BytesMut::new(); // once large frames are through, give it back
        }
        let rest = match frame_len(&self.buffer, self.max) {
            Ok(None) => self.buffer.first_chunk::<LENGTH>().map_or(0, |prefix| {
                LENGTH + u32::from_be_bytes(*prefix) as usize - self.buffer.len()
            }),
            Ok(Some(_)) | Err(_) => 0,
        };
        self.buffer.reserve(rest.max(chunk));
        &mut self.buffer
    }
}

/// A frame announcing more than the largest one allowed.
#[derive(Debug, PartialEq, thiserror::Error)]
#[error("a frame of {len} bytes, over max_frame_len ({max})")]
pub(super) struct FrameTooLarge {
    pub len: usize,
    pub max: usize,
}

/// postcard's output straight into the frame's buffer (not through
/// `std::io::Write`, which costs a call and a loop for each byte of a length or
/// a tag): appends up to `room` bytes, and counts every byte written.
struct Bounded<'a> {
    buffer: &'a mut BytesMut,
    room: usize,
    len: usize,
}

impl postcard::ser_flavors::Flavor for Bounded<'_> {
    type Output = usize;

    #[inline]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        if self.len < self.room {
            self.buffer.put_u8(byte);
        }
        self.len += 1;
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        if self.len + bytes.len() <= self.room {
            self.buffer.extend_from_slice(bytes);
        }
        self.len += bytes.len();
        Ok(())
    }

    fn finalize(self) -> postcard::Result<usize> {
        Ok(self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::codec::Decoder;

    #[test]
    fn frames_are_cut_as_the_codec_cuts_them() {
        let mut buffer = BytesMut::new();
        for text in ["", "one", "a longer message"] {
            write_frame(&text, 64, &mut buffer).unwrap();
        }
        let mut codec = Options::new().max_frame_len(64).codec();
        let mut by_codec = buffer.clone();
        let mut at = 0;
        while let Some(len) = frame_len(&buffer[at..], 64).unwrap() {
            let body = codec.decode(&mut by_codec).unwrap().unwrap();
            assert_eq!(&buffer[at + LENGTH..at + LENGTH + len], &body[..]);
            at += LENGTH + len;
        }
        assert_eq!(at, buffer.len());
        let mut long = BytesMut::new();
        write_frame(&"a longer message", 64, &mut long).unwrap();
        assert_eq!(frame_len(&long, 64), Ok(Some(long.len() - LENGTH)));
        assert_eq!(frame_len(&long[..long.len() - 1], 64), Ok(None));
        assert_eq!(frame_len(&long[..3], 64), Ok(None));
        let huge = u32::MAX.to_be_bytes();
        let error = frame_len(&huge, 64).unwrap_err();
        assert_eq!(
            error.to_string(),
            "a frame of 4294967295 bytes, over max_frame_len (64)"
        );
    }

    #[test]
    fn an_oversized_length_prefix_allocates_nothing() {
        let mut frames = Frames::new(1024);
        frames
            .for_reading(16)
            .extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(frames.next().is_err());
        assert!(frames.for_reading(16).capacity() < 1024);
    }

    #[test]
    fn a_frame_begun_gets_room_for_its_rest_and_frames_given_go_at_the_next_read() {
        let mut whole = BytesMut::new();
        write_frame(&"x".repeat(1000), 4096, &mut whole).unwrap();
        write_frame(&"next", 4096, &mut whole).unwrap();
        let mut frames = Frames::new(4096);
        frames.for_reading(16).extend_from_slice(&whole[..10]);
        assert_eq!(frames.next(), Ok(None));
        let buffer = frames.for_reading(16);
        assert!(buffer.capacity() - buffer.len() >= LENGTH + 1002 - 10);
        buffer.extend_from_slice(&whole[10..]);
        assert_eq!(frames.next().unwrap().map(<[u8]>::len), Some(1002));
        assert_eq!(frames.next().unwrap().map(<[u8]>::len), Some(5));
        assert_eq!(frames.next(), Ok(None));
        assert!(
            frames.for_reading(16).is_empty(),
            "the frames given are gone"
        );
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
