// Every key, and `-> ()` written out.
#[multinode::main(
    port = 0,
    host = "127.0.0.1",
    nodes = 2,
    master_listen = false,
    restart = false,
    shutdown_timeout = 0.5,
    flavor = "multi_thread",
    worker_threads = 2,
    backlog = 64,
    balance = "shared",
    timeout = 10,
    boot_failures = 3
)]
async fn main(nodes: multinode::Nodes) -> () {
    assert!(nodes.id() <= nodes.count());
}
