//! The handshake every mesh stream goes through before it is handed out: each end
//! writes one fixed-size hello naming the protocol version, who it is and whom it
//! expects, then reads the other's. A stream is a [`Peer`](super::Peer) only once
//! both hellos have crossed and agree with the labels the master gave.

use std::io;
use std::os::fd::OwnedFd;

use socket2::{Domain, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::control::incarnation::Incarnation;

/// The mesh protocol version; both ends must speak the same.
pub(crate) const VERSION: u32 = 1;
/// What every hello starts with: garbage is told apart at once.
const MAGIC: [u8; 8] = *b"MNMESH\r\n";
/// The size of a hello: magic, version, sender id, sender generation, receiver id.
pub(crate) const HELLO_LEN: usize = 8 + 4 + 8 + 8 + 8;

/// One end's hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hello {
    pub version: u32,
    pub from: u64,
    pub generation: u64,
    pub to: u64,
}

impl Hello {
    pub(crate) fn encode(&self) -> [u8; HELLO_LEN] {
        let mut bytes = [0u8; HELLO_LEN];
        bytes[..8].copy_from_slice(&MAGIC);
        bytes[8..12].copy_from_slice(&self.version.to_be_bytes());
        bytes[12..20].copy_from_slice(&self.from.to_be_bytes());
        bytes[20..28].copy_from_slice(&self.generation.to_be_bytes());
        bytes[28..36].copy_from_slice(&self.to.to_be_bytes());
        bytes
    }

    /// Parses a hello: a fixed-size read, so nothing a peer sends makes it allocate.
    pub(crate) fn decode(bytes: &[u8; HELLO_LEN]) -> Result<Hello, String> {
        if bytes[..8] != MAGIC {
            return Err("not a multinode mesh handshake (garbage before the handshake)".into());
        }
        let word = |range: std::ops::Range<usize>| {
            let mut buf = [0u8; 8];
            buf.copy_from_slice(&bytes[range]);
            u64::from_be_bytes(buf)
        };
        let version = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if version != VERSION {
            return Err(format!(
                "mesh protocol version {version} on the other end, this node speaks {VERSION}"
            ));
        }
        Ok(Hello {
            version,
            from: word(12..20),
            generation: word(20..28),
            to: word(28..36),
        })
    }
}

/// Runs the handshake on a stream the master labelled as incarnation `peer`,
/// for this node `me`; returns the stream once both hellos crossed.
pub(crate) async fn handshake(
    fd: OwnedFd,
    me: Incarnation,
    peer: Incarnation,
) -> io::Result<UnixStream> {
    let socket = Socket::from(fd);
    if socket.domain()? != Domain::UNIX || socket.r#type()? != Type::STREAM {
        return Err(io::Error::other(
            "the descriptor received as a mesh stream is not a Unix stream socket",
        ));
    }
    socket.set_cloexec(true)?;
    socket.set_nonblocking(true)?;
    let mut stream =
        UnixStream::from_std(std::os::unix::net::UnixStream::from(OwnedFd::from(socket)))?;
    let mine = Hello {
        version: VERSION,
        from: me.slot as u64,
        generation: me.generation,
        to: peer.slot as u64,
    };
    let closed = |e: io::Error| match e.kind() {
        io::ErrorKind::UnexpectedEof | io::ErrorKind::BrokenPipe => io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the stream closed before the handshake",
        ),
        _ => e,
    };
    let exchange = async {
        stream.write_all(&mine.encode()).await.map_err(closed)?;
        let mut buf = [0u8; HELLO_LEN];
        stream.read_exact(&mut buf).await.map_err(closed)?;
        let theirs = Hello::decode(&buf).map_err(io::Error::other)?;
        let expected = (peer.slot as u64, peer.generation, me.slot as u64);
        if (theirs.from, theirs.generation, theirs.to) != expected {
            return Err(io::Error::other(format!(
                "the handshake names node {} generation {} for node {}, expected node {} generation {} for node {}",
                theirs.from, theirs.generation, theirs.to, expected.0, expected.1, expected.2
            )));
        }
        Ok(())
    };
    // No time limit: the other end answers once its runtime runs, and its end
    // closes when its process exits (a stuck one is the watchdog's).
    exchange.await.map(|()| stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pair() -> (OwnedFd, std::os::unix::net::UnixStream) {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        b.set_nonblocking(false).unwrap();
        (a.into(), b)
    }

    #[tokio::test]
    async fn both_ends_agree() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (left, right) = tokio::join!(
            handshake(a.into(), Incarnation::new(1, 3), Incarnation::new(2, 5)),
            handshake(b.into(), Incarnation::new(2, 5), Incarnation::new(1, 3)),
        );
        left.unwrap();
        right.unwrap();
    }

    #[tokio::test]
    async fn garbage_a_wrong_label_or_version_is_an_error() {
        use std::io::Write;
        let (fd, mut other) = pair();
        other.write_all(&[b'x'; HELLO_LEN]).unwrap();
        let error = handshake(fd, Incarnation::new(1, 1), Incarnation::new(2, 1))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("garbage"), "{error}");

        let (fd, mut other) = pair();
        let wrong_generation = Hello {
            version: VERSION,
            from: 2,
            generation: 7,
            to: 1,
        };
        other.write_all(&wrong_generation.encode()).unwrap();
        let error = handshake(fd, Incarnation::new(1, 1), Incarnation::new(2, 1))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("generation 7"), "{error}");

        let (fd, mut other) = pair();
        let mut future = Hello {
            version: VERSION,
            from: 2,
            generation: 1,
            to: 1,
        }
        .encode();
        future[11] = 9;
        other.write_all(&future).unwrap();
        let error = handshake(fd, Incarnation::new(1, 1), Incarnation::new(2, 1))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("version 9"), "{error}");

        let (fd, mut other) = pair();
        other.write_all(b"MNMESH").unwrap();
        drop(other);
        let error = handshake(fd, Incarnation::new(1, 1), Incarnation::new(2, 1))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("closed before"), "{error}");
    }

    #[tokio::test]
    async fn a_descriptor_that_is_not_a_unix_stream_is_refused() {
        let file: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
        assert!(
            handshake(file, Incarnation::new(1, 1), Incarnation::new(2, 1))
                .await
                .is_err()
        );
        let (datagram, _other) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let error = handshake(
            datagram.into(),
            Incarnation::new(1, 1),
            Incarnation::new(2, 1),
        )
        .await
        .unwrap_err();
        assert!(error.to_string().contains("not a Unix stream"), "{error}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// Random bytes never panic the parser.
        #[test]
        fn decode_never_panics(bytes in proptest::array::uniform32(any::<u8>()), tail in proptest::array::uniform4(any::<u8>())) {
            let mut hello = [0u8; HELLO_LEN];
            hello[..32].copy_from_slice(&bytes);
            hello[32..].copy_from_slice(&tail);
            let _ = Hello::decode(&hello);
        }

        /// A valid hello with one byte changed either still parses (a changed id,
        /// caught by the label check) or is refused; it round-trips unchanged.
        #[test]
        fn mutated_hellos(from: u64, generation: u64, to: u64, at in 0..HELLO_LEN, byte: u8) {
            let hello = Hello { version: VERSION, from, generation, to };
            let mut bytes = hello.encode();
            prop_assert_eq!(Hello::decode(&bytes), Ok(hello));
            bytes[at] = byte;
            if let Ok(parsed) = Hello::decode(&bytes) {
                prop_assert!(at >= 12 || bytes == hello.encode());
                prop_assert_eq!(parsed.encode(), bytes);
            }
        }
    }
}
