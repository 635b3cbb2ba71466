//! What to measure, from the environment (the top of main.rs says which variables).

pub struct Plan {
    pub quick: bool,
    pub only: Option<usize>,
    pub rounds: usize,
    pub side: Side,
    /// (payload size, messages a round, in a fixed array)
    pub phases: Vec<(usize, usize, bool)>,
}

#[derive(Clone, Copy, PartialEq)]
pub enum Side {
    Both,
    Mesh,
    /// The bare socketpair alone: its frames encoded once, and not decoded.
    Bare,
    /// The bare socketpair alone, each message encoded and decoded.
    BarePostcard,
}

impl Plan {
    pub fn from_env() -> Plan {
        let var = |name| std::env::var(name).ok();
        let number = |name| var(name).map(|v: String| v.parse::<usize>().expect(name));
        let quick = var("QUICK").as_deref() == Some("1");
        let broadcast_only = var("ONLY").as_deref() == Some("broadcast");
        let only: Option<usize> = var("ONLY").and_then(|s| s.parse().ok());
        let rounds = number("ROUNDS").unwrap_or(match (quick, only) {
            (_, Some(_)) => 10,
            (true, None) => 1,
            (false, None) => 3,
        });
        let side = match var("SIDE").as_deref() {
            None => Side::Both,
            Some("mesh") => Side::Mesh,
            Some("bare") => Side::Bare,
            Some("bare-postcard") => Side::BarePostcard,
            Some(other) => panic!("SIDE={other}: mesh, bare or bare-postcard"),
        };
        let payload = var("PAYLOAD");
        let small = if quick { 200_000 } else { 1_000_000 };
        let phases = [
            (64, small, false),
            (4096, if quick { 50_000 } else { 200_000 }, false),
            (64, small, true),
        ]
        .into_iter()
        .filter(|(size, _, _)| !broadcast_only && only.is_none_or(|o| o == *size))
        .filter(|(_, _, array)| match payload.as_deref() {
            None => true,
            Some("bytes") => !array,
            Some("array") => *array,
            Some(other) => panic!("PAYLOAD={other}: bytes or array"),
        })
        .map(|(size, count, array)| (size, number("COUNT").unwrap_or(count), array))
        .collect();
        Plan {
            quick,
            only,
            rounds,
            side,
            phases,
        }
    }
}
