//! The listening sockets: bound once by the master, kept open for the whole run,
//! and handed to each incarnation of each serving slot.

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, RawFd};

use crate::config::{Balance, Config};

pub(crate) mod socket;
mod steering;

use socket::{reuse_port_listener, socket, Labelled};

/// Listening sockets a master did not bind itself.
pub(crate) enum Passed {
    /// None: bind the configured address.
    Nothing,
    /// By the service manager (socket activation).
    Activated(TcpListener),
    /// By the old master (an upgrade).
    Inherited(Vec<Labelled<TcpListener>>),
}

/// The master's listening sockets: one per serving slot ([`Balance::ReusePort`]) or
/// one for all ([`Balance::Shared`], [`Balance::LeastConn`]).
#[derive(Debug)]
pub(crate) struct Listeners {
    sockets: Sockets,
    /// The bound address, with the real port when port 0 was asked for.
    pub addr: SocketAddr,
    backlog: i32,
}

#[derive(Debug)]
enum Sockets {
    Shared(TcpListener),
    /// Each member slot's own socket in the `SO_REUSEPORT` group: a slot that ends
    /// for good has its socket closed, so that the kernel queues nothing there.
    PerSlot(BTreeMap<usize, TcpListener>, steering::Group),
}

impl Listeners {
    /// Binds the configured address. Fails, naming nothing but the OS error, when the
    /// address is taken, even by a group of `SO_REUSEPORT` sockets that would
    /// otherwise let us join it and silently share the port.
    pub fn bind(config: &Config) -> io::Result<Self> {
        // The probe binds without SO_REUSEPORT, so it conflicts with every holder
        // of the address, and learns the port when 0 was asked for.
        let probe = socket(config.addr, false)?;
        probe.bind(&config.addr.into())?;
        let addr = probe
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("bound address is not an IP address"))?;
        let backlog = i32::try_from(config.backlog).unwrap_or(i32::MAX);
        let sockets = match config.balance {
            Balance::ReusePort | Balance::Sticky => {
                drop(probe);
                let sockets = config
                    .serving_slots()
                    .map(|slot| Ok((slot, reuse_port_listener(addr, backlog)?)))
                    .collect::<io::Result<_>>()?;
                let mut group = steering::Group::default();
                config.serving_slots().for_each(|slot| group.joined(slot));
                Sockets::PerSlot(sockets, group)
            }
            _ => {
                probe.listen(backlog)?;
                Sockets::Shared(probe.into())
            }
        };
        Ok(Listeners {
            sockets,
            addr,
            backlog,
        })
    }

    /// The balance these sockets can serve, `wanted` if they can: one shared
    /// socket cannot be one per node (`least_conn` then), nor the other way
    /// round (`reuse_port`).
    pub fn fitting(&self, wanted: Balance) -> Balance {
        match (&self.sockets, wanted) {
            (Sockets::Shared(_), Balance::ReusePort | Balance::Sticky) => Balance::LeastConn,
            (Sockets::PerSlot(..), Balance::Sticky) => Balance::Sticky,
            (Sockets::PerSlot(..), _) => Balance::ReusePort,
            (Sockets::Shared(_), other) => other,
        }
    }

    /// The sockets to serve: bound now, or `passed` to this master (their
    /// shape may not be the one `config.balance` asks for: see [`Self::fitting`]).
    pub fn open(passed: Passed, config: &Config) -> io::Result<Self> {
        let backlog = i32::try_from(config.backlog).unwrap_or(i32::MAX);
        let shared = |socket: TcpListener| {
            Ok(Listeners {
                addr: socket.local_addr()?,
                sockets: Sockets::Shared(socket),
                backlog,
            })
        };
        match passed {
            Passed::Nothing => Listeners::bind(config),
            Passed::Activated(socket) => shared(socket),
            Passed::Inherited(mut sockets) => match sockets.first() {
                Some((None, _)) if sockets.len() == 1 => shared(sockets.remove(0).1),
                Some((Some(_), socket)) => {
                    let addr = socket.local_addr()?;
                    let mut group = steering::Group::default();
                    let mut per_slot = BTreeMap::new();
                    for (slot, socket) in sockets {
                        let slot = slot.ok_or_else(|| {
                            io::Error::other("a shared socket among per-node ones")
                        })?;
                        group.joined(slot);
                        per_slot.insert(slot, socket);
                    }
                    let mut listeners = Listeners {
                        addr,
                        sockets: Sockets::PerSlot(per_slot, group),
                        backlog,
                    };
                    let serving: Vec<usize> = config.serving_slots().collect();
                    let inherited: Vec<usize> =
                        listeners.per_slot().map(|(slot, _)| slot).collect();
                    for slot in inherited.iter().filter(|s| !serving.contains(s)) {
                        listeners.close_slot(*slot);
                    }
                    for slot in serving {
                        listeners.open_slot(slot)?;
                    }
                    Ok(listeners)
                }
                _ => Err(io::Error::other("no socket passed")),
            },
        }
    }

    /// Every socket with its label, in the order of the `SO_REUSEPORT` group,
    /// for a new master (an upgrade).
    pub fn handed_over(&self) -> Vec<Labelled<RawFd>> {
        match &self.sockets {
            Sockets::Shared(socket) => vec![(None, socket.as_raw_fd())],
            Sockets::PerSlot(sockets, group) => group
                .order()
                .iter()
                .filter_map(|slot| Some((Some(*slot), sockets.get(slot)?.as_raw_fd())))
                .collect(),
        }
    }

    /// Makes sure slot `slot` has a socket (SIGTTIN): with `ReusePort`, one more in
    /// the group.
    pub fn open_slot(&mut self, slot: usize) -> io::Result<()> {
        if let Sockets::PerSlot(sockets, group) = &mut self.sockets {
            if let std::collections::btree_map::Entry::Vacant(entry) = sockets.entry(slot) {
                entry.insert(reuse_port_listener(self.addr, self.backlog)?);
                group.joined(slot);
            }
        }
        Ok(())
    }

    /// Closes slot `slot`'s own socket, when it ends for good (a process still
    /// holding it keeps it open until it exits).
    pub fn close_slot(&mut self, slot: usize) {
        if let Sockets::PerSlot(sockets, group) = &mut self.sockets {
            if sockets.remove(&slot).is_some() {
                group.left(slot);
            }
        }
    }

    /// With `ReusePort`: new connections go to the sockets of the slots not in
    /// `avoid` only (all of them again when `avoid` is empty).
    /// With `Sticky`: each client address to its own slot, or, if that slot is
    /// in `avoid`, to another.
    pub fn steer_away(&self, avoid: &[usize], balance: Balance) -> io::Result<()> {
        use std::os::fd::AsFd;
        if let Sockets::PerSlot(sockets, group) = &self.sockets {
            if let Some(socket) = sockets.values().next() {
                match balance {
                    Balance::Sticky => steering::stick(socket.as_fd(), group, avoid)?,
                    _ => steering::steer(socket.as_fd(), &group.indices_but(avoid), group.len())?,
                }
            }
        }
        Ok(())
    }

    /// Each slot's own socket, with `ReusePort`; none otherwise.
    pub fn per_slot(&self) -> impl Iterator<Item = (usize, &TcpListener)> {
        let sockets = match &self.sockets {
            Sockets::PerSlot(sockets, _) => Some(sockets.iter().map(|(slot, s)| (*slot, s))),
            Sockets::Shared(_) => None,
        };
        sockets.into_iter().flatten()
    }

    /// The listening socket that serving slot `slot` accepts from.
    pub fn for_slot(&self, slot: usize) -> io::Result<&TcpListener> {
        match &self.sockets {
            Sockets::Shared(socket) => Ok(socket),
            Sockets::PerSlot(sockets, _) => sockets
                .get(&slot)
                .ok_or_else(|| io::Error::other(format!("node {slot} has no listening socket"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::socket::adopt;
    use super::*;
    use crate::config::Builder;
    use std::os::fd::OwnedFd;

    fn config(balance: Balance, nodes: usize) -> Config {
        Builder::new()
            .port(0)
            .nodes(nodes)
            .balance(balance)
            .resolve(|_| None)
            .unwrap()
    }

    #[test]
    fn one_listener_per_slot_on_one_port() {
        let listeners = Listeners::bind(&config(Balance::ReusePort, 3)).unwrap();
        let ports: Vec<_> = (0..3)
            .map(|slot| {
                listeners
                    .for_slot(slot)
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port()
            })
            .collect();
        assert_eq!(ports, vec![listeners.addr.port(); 3]);
        assert_ne!(
            listeners.for_slot(0).unwrap().local_addr().unwrap().port(),
            0
        );
    }

    #[test]
    fn a_slot_that_ends_has_its_socket_closed_and_a_new_one_gets_one() {
        let mut listeners = Listeners::bind(&config(Balance::ReusePort, 3)).unwrap();
        let port = listeners.addr.port();
        listeners.close_slot(2);
        assert!(listeners.for_slot(2).is_err(), "closed");
        listeners.open_slot(2).unwrap();
        listeners.open_slot(3).unwrap();
        for slot in [2, 3] {
            let addr = listeners.for_slot(slot).unwrap().local_addr().unwrap();
            assert_eq!(addr.port(), port);
        }
        // One socket for all: nothing to open or close.
        let mut shared = Listeners::bind(&config(Balance::LeastConn, 3)).unwrap();
        shared.close_slot(2);
        assert!(shared.for_slot(2).is_ok());
    }

    #[test]
    fn a_taken_port_is_refused_even_to_reuse_port() {
        let first = Listeners::bind(&config(Balance::ReusePort, 2)).unwrap();
        let mut again = config(Balance::ReusePort, 2);
        again.addr = first.addr;
        let err = Listeners::bind(&again).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn the_sockets_shape_decides_the_balance() {
        let shared = Listeners::bind(&config(Balance::Shared, 2)).unwrap();
        assert_eq!(shared.fitting(Balance::ReusePort), Balance::LeastConn);
        assert_eq!(shared.fitting(Balance::Shared), Balance::Shared);
        let per_slot = Listeners::bind(&config(Balance::ReusePort, 2)).unwrap();
        assert_eq!(per_slot.fitting(Balance::LeastConn), Balance::ReusePort);
    }

    #[test]
    fn adopt_checks_for_a_listening_tcp_socket() {
        let listeners = Listeners::bind(&config(Balance::Shared, 2)).unwrap();
        let fd: OwnedFd = listeners.for_slot(1).unwrap().try_clone().unwrap().into();
        adopt(fd).unwrap();
        let unbound: OwnedFd = socket("127.0.0.1:0".parse().unwrap(), false)
            .unwrap()
            .into();
        assert!(adopt(unbound).is_err());
        let file: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
        assert!(adopt(file).is_err());
    }
}
