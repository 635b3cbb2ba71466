//! The shared segment: an anonymous, sealed `memfd` that the master creates and
//! sends to each worker as a labelled descriptor, and every process maps. It
//! holds the load table, then the status board on a page of its own.

use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

use super::board::Board;
use super::load_table::LoadTable;

/// The segment, mapped in this process.
pub(crate) struct Segment {
    start: NonNull<u8>,
    fd: OwnedFd,
}

// SAFETY: the mapping is only ever accessed through atomics, and lives as long as
// the `Segment`.
unsafe impl Send for Segment {}
unsafe impl Sync for Segment {}

/// The segment's size never changes, nor its seals.
const SEALS: SealFlag = SealFlag::F_SEAL_SHRINK
    .union(SealFlag::F_SEAL_GROW)
    .union(SealFlag::F_SEAL_SEAL);

/// Where the status board starts: after the table, on its own page.
const BOARD_OFFSET: usize = std::mem::size_of::<LoadTable>().div_ceil(4096) * 4096;
/// The whole memory: the table, then the board (its pages are only touched as
/// they are used).
const MAPPED_BYTES: usize = BOARD_OFFSET + std::mem::size_of::<Board>();

impl Segment {
    /// A new, zeroed segment (the master's).
    pub(crate) fn create() -> io::Result<Self> {
        use nix::sys::memfd::MFdFlags;
        let flags = MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING;
        let fd = nix::sys::memfd::memfd_create(c"multinode-load", flags)?;
        nix::unistd::ftruncate(&fd, MAPPED_BYTES as i64)?;
        // Sealed, so that no worker can shrink it under the others' mappings
        // (a SIGBUS in every process that reads it).
        fcntl(&fd, FcntlArg::F_ADD_SEALS(SEALS))?;
        Self::map(fd)
    }

    /// Maps the segment received from the master, after checking its size and
    /// seals.
    pub(crate) fn open(fd: OwnedFd) -> io::Result<Self> {
        let seals = SealFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GET_SEALS)?);
        if !seals.contains(SEALS) {
            return Err(io::Error::other("the shared memory received is not sealed"));
        }
        let size = nix::sys::stat::fstat(&fd)?.st_size;
        if usize::try_from(size).ok() != Some(MAPPED_BYTES) {
            return Err(io::Error::other(format!(
                "the shared memory received is {size} bytes, not {MAPPED_BYTES}"
            )));
        }
        Self::map(fd)
    }

    fn map(fd: OwnedFd) -> io::Result<Self> {
        let length = NonZeroUsize::new(MAPPED_BYTES).expect("the segment is not empty");
        // SAFETY: a fresh shared mapping of a file of exactly this size, accessed
        // only through atomics; unmapped on drop.
        let ptr = unsafe {
            mmap(
                None,
                length,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                &fd,
                0,
            )?
        };
        Ok(Segment {
            start: ptr.cast(),
            fd,
        })
    }

    /// The descriptor, to send to a worker.
    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The load table, at the segment's start.
    pub(crate) fn table(&self) -> &LoadTable {
        // SAFETY: the table lies at the start of the mapping (page-aligned, so
        // aligned for its lines), is only ever accessed through atomics, for
        // which all zeroes is a valid value; it lives as long as `&self`.
        unsafe { &*self.start.as_ptr().cast() }
    }

    /// The status board, in the same memory.
    pub(crate) fn board(&self) -> &Board {
        // SAFETY: the board lies within the mapping (MAPPED_BYTES), page-aligned,
        // and is only ever accessed through atomics; it lives as long as `&self`.
        unsafe { &*self.start.as_ptr().add(BOARD_OFFSET).cast() }
    }
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("fd", &self.fd)
            .finish_non_exhaustive()
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: mapped in `map` with this length, and no reference outlives self.
        unsafe {
            let _ = munmap(self.start.cast(), MAPPED_BYTES);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_segment_is_shared_through_its_descriptor() {
        let shm = Segment::create().unwrap();
        let other = Segment::open(shm.fd().try_clone_to_owned().unwrap()).unwrap();
        shm.table().set_serving_end(3);
        shm.table().request(2);
        assert_eq!(other.table().serving_end(), 3);
        assert_eq!(other.table().totals(2), (0, 1));
        shm.board()
            .supervisor()
            .reloads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let seen = other
            .board()
            .supervisor()
            .reloads
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(seen, 1);
    }

    #[test]
    fn a_segment_of_the_wrong_size_or_unsealed_is_refused() {
        let fd =
            nix::sys::memfd::memfd_create(c"x", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap();
        nix::unistd::ftruncate(&fd, 64).unwrap();
        assert!(Segment::open(fd).is_err());
        let fd =
            nix::sys::memfd::memfd_create(c"x", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap();
        nix::unistd::ftruncate(&fd, MAPPED_BYTES as i64).unwrap();
        let err = Segment::open(fd).unwrap_err();
        assert!(err.to_string().contains("not sealed"), "{err}");
        // The master's table cannot be shrunk by whoever holds it.
        let shm = Segment::create().unwrap();
        assert!(nix::unistd::ftruncate(shm.fd(), 64).is_err());
    }
}
