//! Machines of the cluster tests: `mesh_probe` programs meeting in a Redis of
//! the test's own.

use std::time::Duration;

use super::redis::Redis;
use super::{get, poll, Program};

const WAIT: Duration = Duration::from_secs(20);

/// A `mesh_probe` machine of `nodes` nodes named `name` in `redis`'s cluster.
pub fn mesh_machine(redis: &Redis, name: &str, nodes: &str) -> Program {
    mesh_machine_with(redis, name, nodes, &[])
}

/// [`mesh_machine`] with more variables.
pub fn mesh_machine_with(redis: &Redis, name: &str, nodes: &str, more: &[(&str, &str)]) -> Program {
    let url = redis.url();
    let mut env = vec![
        ("MULTINODE_NODES", nodes),
        ("MULTINODE_CLUSTER", url.as_str()),
        ("MULTINODE_MACHINE", name),
    ];
    env.extend_from_slice(more);
    Program::start("mesh_probe", &env)
}

/// Machine b of `nodes` nodes in `redis`'s cluster, whose node `deaf` reads
/// nothing until it gets SIGUSR1.
pub fn deaf_machine(redis: &Redis, nodes: &str, deaf: usize) -> Program {
    let deaf_id = deaf.to_string();
    let program = mesh_machine_with(redis, "b", nodes, &[("MESH_DEAF", &deaf_id)]);
    program.ready();
    let needle = format!("node {deaf} not reading until SIGUSR1");
    program.wait_for(&needle, 1, WAIT);
    program
}

/// Waits until a broadcast from `from` is heard on `to` (the subscriptions are
/// up); the warm-up tags are `warm…`.
pub fn connected(from: &Program, to: &Program, name_from: &str) {
    let (addr, mut n) = (from.ready(), 0);
    let heard = poll(WAIT, || {
        n += 1;
        get(addr, &format!("/broadcast?tag=warm{n}")).ok()?;
        let needle = format!("got tag warm{n} from {name_from}/");
        std::thread::sleep(Duration::from_millis(50));
        (to.count(&needle) > 0).then_some(())
    });
    assert!(heard.is_some(), "no broadcast crossed: {:?}", to.log());
}

/// Waits until each of the `nodes` nodes of `program` has seen the other
/// machines be `machines` (as `mesh_probe` logs them: `["b"]`).
pub fn seen_by_every_node(program: &Program, nodes: usize, machines: &str) {
    program.wait_for(&format!("sees machines {machines}"), nodes, WAIT);
}
