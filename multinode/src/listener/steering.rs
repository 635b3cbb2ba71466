//! Steering new connections away from a node's own queue (`reuse_port`): a
//! classic BPF program on the `SO_REUSEPORT` group that picks, by a hash of the
//! client's port, one of the sockets of the nodes that accept. The kernel
//! indexes a group's sockets in the order they started listening, and fills the
//! place of one that leaves with the last; `Group` keeps that order.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::libc::{self, sock_filter};

/// `SO_ATTACH_REUSEPORT_CBPF` and `SO_DETACH_REUSEPORT_BPF` (asm-generic values,
/// absent from `libc` for Linux).
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
const SO_DETACH_REUSEPORT_BPF: libc::c_int = 68;

/// The slots of a `SO_REUSEPORT` group in the kernel's order.
#[derive(Debug, Default)]
pub(super) struct Group {
    order: Vec<usize>,
}

impl Group {
    /// `slot`'s socket started listening: last in the group.
    pub fn joined(&mut self, slot: usize) {
        self.order.push(slot);
    }

    /// `slot`'s socket closed: the last takes its place.
    pub fn left(&mut self, slot: usize) {
        if let Some(index) = self.order.iter().position(|s| *s == slot) {
            self.order.swap_remove(index);
        }
    }

    /// The slots in the kernel's order of the group.
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// The group's indices of the slots not in `avoid`.
    pub fn indices_but(&self, avoid: &[usize]) -> Vec<u32> {
        (0..self.order.len() as u32)
            .filter(|i| !avoid.contains(&self.order[*i as usize]))
            .collect()
    }
}

/// Makes the group of `socket` pick among `indices` only; with none, or all,
/// the kernel's own hash again.
pub(super) fn steer(socket: BorrowedFd<'_>, indices: &[u32], all: usize) -> io::Result<()> {
    if indices.is_empty() || indices.len() >= all {
        let none: libc::c_int = 0;
        return match setsockopt(socket, SO_DETACH_REUSEPORT_BPF, &none) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()), // none attached
            done => done,
        };
    }
    let program = program(indices);
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr() as *mut sock_filter,
    };
    setsockopt(socket, SO_ATTACH_REUSEPORT_CBPF, &fprog)
}

fn setsockopt<T>(socket: BorrowedFd<'_>, option: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a valid `T` for the call, whose length is given.
    let done = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    match done {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

fn op(code: u32, jt: u8, jf: u8, k: u32) -> sock_filter {
    sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// The program: the client's port (read behind the IPv4 or IPv6 header), mixed
/// by a multiplicative hash, modulo the number of sockets, mapped to `indices`.
fn program(indices: &[u32]) -> Vec<sock_filter> {
    use libc::{
        BPF_ABS, BPF_ALU, BPF_B, BPF_H, BPF_IMM, BPF_IND, BPF_JA, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD,
        BPF_LDX, BPF_MOD, BPF_MSH, BPF_MUL, BPF_RET, BPF_RSH, BPF_W,
    };
    let net = libc::SKF_NET_OFF as u32;
    let mut p = vec![
        op(BPF_LD | BPF_B | BPF_ABS, 0, 0, net), // the IP header's first byte
        op(BPF_ALU | BPF_RSH | BPF_K, 0, 0, 4),  // its version
        op(BPF_JMP | BPF_JEQ | BPF_K, 2, 0, 6),
        op(BPF_LDX | BPF_B | BPF_MSH, 0, 0, net), // IPv4: X = its header's length
        op(BPF_JMP | BPF_JA, 0, 0, 1),
        op(BPF_LDX | BPF_W | BPF_IMM, 0, 0, 40), // IPv6: 40 bytes
        op(BPF_LD | BPF_H | BPF_IND, 0, 0, net), // the TCP source port
        op(BPF_ALU | BPF_MUL | BPF_K, 0, 0, 0x9E37_79B1),
        op(BPF_ALU | BPF_RSH | BPF_K, 0, 0, 16),
        op(BPF_ALU | BPF_MOD | BPF_K, 0, 0, indices.len() as u32),
    ];
    let (last, rest) = indices.split_last().expect("at least one socket");
    for (n, index) in rest.iter().enumerate() {
        p.push(op(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, n as u32));
        p.push(op(BPF_RET | BPF_K, 0, 0, *index));
    }
    p.push(op(BPF_RET | BPF_K, 0, 0, *last));
    p
}

/// Makes the group of `socket` send each client address to one slot, the
/// same for as long as it serves (`sticky`): a hash of the address picks one of
/// the group's slots in the order of their numbers, so that the mapping is the
/// same in every master and after every reload; a client whose slot is in
/// `avoid` goes to one of the others, by the same hash.
pub(super) fn stick(socket: BorrowedFd<'_>, group: &Group, avoid: &[usize]) -> io::Result<()> {
    let mut slots: Vec<usize> = group.order().to_vec();
    slots.sort_unstable();
    let index = |slot: usize| {
        group
            .order()
            .iter()
            .position(|s| *s == slot)
            .map(|i| i as u32)
    };
    let buckets: Vec<Option<u32>> = slots
        .iter()
        .map(|slot| index(*slot).filter(|_| !avoid.contains(slot)))
        .collect();
    let mut others = group.indices_but(avoid);
    if others.is_empty() {
        others = group.indices_but(&[]);
    }
    let program = sticky_program(&buckets, &others);
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr() as *mut sock_filter,
    };
    setsockopt(socket, SO_ATTACH_REUSEPORT_CBPF, &fprog)
}

/// The program of [`stick`]: `h`, a hash of the client's address (IPv4, or the
/// last 32 bits of IPv6), picks bucket `h % buckets`; a bucket's socket index,
/// or, for a bucket without one, `others[h / buckets % others]`.
fn sticky_program(buckets: &[Option<u32>], others: &[u32]) -> Vec<sock_filter> {
    use libc::{
        BPF_ABS, BPF_ALU, BPF_B, BPF_DIV, BPF_JA, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_MEM,
        BPF_MOD, BPF_MUL, BPF_RET, BPF_RSH, BPF_ST, BPF_W,
    };
    let net = libc::SKF_NET_OFF as u32;
    let n = buckets.len() as u32;
    let mut p = vec![
        op(BPF_LD | BPF_B | BPF_ABS, 0, 0, net), // the IP header's first byte
        op(BPF_ALU | BPF_RSH | BPF_K, 0, 0, 4),  // its version
        op(BPF_JMP | BPF_JEQ | BPF_K, 2, 0, 6),
        op(BPF_LD | BPF_W | BPF_ABS, 0, 0, net + 12), // IPv4: the source address
        op(BPF_JMP | BPF_JA, 0, 0, 1),
        op(BPF_LD | BPF_W | BPF_ABS, 0, 0, net + 20), // IPv6: its last 32 bits
        op(BPF_ALU | BPF_MUL | BPF_K, 0, 0, 0x9E37_79B1),
        op(BPF_ALU | BPF_RSH | BPF_K, 0, 0, 16),
        op(BPF_ST, 0, 0, 0), // h
        op(BPF_ALU | BPF_MOD | BPF_K, 0, 0, n),
    ];
    // Each bucket: two instructions; then the others' table.
    let fallback = p.len() + 2 * buckets.len();
    for (b, index) in buckets.iter().enumerate() {
        p.push(op(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, b as u32));
        match index {
            Some(index) => p.push(op(BPF_RET | BPF_K, 0, 0, *index)),
            None => {
                let here = p.len() + 1;
                p.push(op(BPF_JMP | BPF_JA, 0, 0, (fallback - here) as u32));
            }
        }
    }
    p.push(op(BPF_LD | BPF_MEM, 0, 0, 0));
    p.push(op(BPF_ALU | BPF_DIV | BPF_K, 0, 0, n));
    p.push(op(BPF_ALU | BPF_MOD | BPF_K, 0, 0, others.len() as u32));
    let (last, rest) = others.split_last().expect("at least one socket");
    for (k, index) in rest.iter().enumerate() {
        p.push(op(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, k as u32));
        p.push(op(BPF_RET | BPF_K, 0, 0, *index));
    }
    p.push(op(BPF_RET | BPF_K, 0, 0, *last));
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;

    /// Room in each queue for every connection the tests make (290), so that
    /// no SYN is dropped however the kernel's hash falls: nothing accepts
    /// while they connect.
    const BACKLOG: i32 = 512;

    fn group(n: usize) -> (Vec<TcpListener>, std::net::SocketAddr) {
        let any = "127.0.0.1:0".parse().unwrap();
        let first = super::super::socket::reuse_port_listener(any, BACKLOG).unwrap();
        let addr = first.local_addr().unwrap();
        let mut sockets = vec![first];
        for _ in 1..n {
            sockets.push(super::super::socket::reuse_port_listener(addr, BACKLOG).unwrap());
        }
        (sockets, addr)
    }

    fn queued(socket: &TcpListener) -> usize {
        std::iter::from_fn(|| socket.accept().ok()).count()
    }

    #[test]
    fn steered_connections_avoid_a_socket_and_spread_over_the_others() {
        let (sockets, addr) = group(4);
        let mut order = Group::default();
        (0..4).for_each(|slot| order.joined(slot));
        let indices = order.indices_but(&[1]);
        assert_eq!(indices, vec![0, 2, 3]);
        steer(sockets[0].as_fd(), &indices, 4).unwrap();
        let clients: Vec<_> = (0..90).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let counts: Vec<_> = sockets.iter().map(queued).collect();
        assert_eq!(counts[1], 0, "{counts:?}");
        assert!([0, 2, 3].iter().all(|i| counts[*i] >= 15), "{counts:?}");
        // Back to the kernel's hash: every socket gets some.
        steer(sockets[0].as_fd(), &order.indices_but(&[]), 4).unwrap();
        let more: Vec<_> = (0..200)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        let counts: Vec<_> = sockets.iter().map(queued).collect();
        assert!(counts.iter().all(|c| *c > 0), "{counts:?}");
        drop((clients, more));
    }

    /// A client bound to `source`, connected to `addr`.
    fn from(source: &str, addr: std::net::SocketAddr) -> TcpStream {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let source: std::net::SocketAddr = format!("{source}:0").parse().unwrap();
        socket.bind(&source.into()).unwrap();
        socket.connect(&addr.into()).unwrap();
        socket.into()
    }

    /// Which socket of `sockets` each connection of `clients` waits in.
    fn landed(sockets: &[TcpListener]) -> Vec<(usize, std::net::IpAddr)> {
        let mut landed = Vec::new();
        for (i, socket) in sockets.iter().enumerate() {
            while let Ok((_, peer)) = socket.accept() {
                landed.push((i, peer.ip()));
            }
        }
        landed
    }

    #[test]
    fn each_address_sticks_to_one_socket_and_an_avoided_ones_go_elsewhere() {
        let (sockets, addr) = group(4);
        sockets
            .iter()
            .for_each(|s| s.set_nonblocking(true).unwrap());
        let mut order = Group::default();
        (0..4).for_each(|slot| order.joined(slot));
        stick(sockets[0].as_fd(), &order, &[]).unwrap();
        let sources: Vec<String> = (2..34).map(|i| format!("127.0.0.{i}")).collect();
        let clients: Vec<_> = sources
            .iter()
            .flat_map(|s| (0..3).map(move |_| s.clone()))
            .map(|s| from(&s, addr))
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let first = landed(&sockets);
        assert_eq!(first.len(), clients.len());
        let mut home = std::collections::BTreeMap::new();
        for (i, ip) in &first {
            assert_eq!(
                *home.entry(*ip).or_insert(*i),
                *i,
                "{ip} went to two sockets"
            );
        }
        let used: std::collections::BTreeSet<_> = home.values().collect();
        assert_eq!(used.len(), 4, "{home:?}");
        // Socket 1 avoided: its clients go to the others; the others stay.
        stick(sockets[0].as_fd(), &order, &[1]).unwrap();
        let again: Vec<_> = sources.iter().map(|s| from(s, addr)).collect();
        std::thread::sleep(std::time::Duration::from_millis(50));
        for (i, ip) in landed(&sockets) {
            assert_ne!(i, 1);
            if home[&ip] != 1 {
                assert_eq!(home[&ip], i, "{ip} moved");
            }
        }
        drop((clients, again));
    }

    #[test]
    fn the_group_order_follows_the_kernel() {
        let mut order = Group::default();
        (0..4).for_each(|slot| order.joined(slot));
        order.left(1);
        order.joined(7);
        assert_eq!(order.order, vec![0, 3, 2, 7]);
        assert_eq!(order.indices_but(&[3]), vec![0, 2, 3]);
    }
}
