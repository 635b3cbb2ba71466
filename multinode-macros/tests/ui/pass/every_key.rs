// Every key, and `-> ()` written out; but `worker_threads`, which goes with
// `flavor = "multi_thread"`, which needs multinode's `multi-thread` feature (the
// macro's unit tests and multinode's `--features multi-thread` tests cover them);
// `cluster` empty, which is no cluster (a URL needs the `cluster` feature), and
// `tls_cert`, `tls_key` empty, which is no TLS (files need the `tls` feature).
// `logging` names a function that installs the program's own subscriber.
#[multinode::main(
    port = 0,
    host = "127.0.0.1",
    nodes = 2,
    master_listen = false,
    restart = false,
    shutdown_timeout = 0.5,
    flavor = "current_thread",
    backlog = 64,
    balance = "shared",
    watchdog_timeout = 10,
    upgrade_timeout = 60,
    boot_failures = 3,
    max_connections = 1000,
    ready_nodes = 1,
    max_requests = 100000,
    max_requests_jitter = 100,
    max_memory = "512M",
    max_memory_window = 10,
    max_memory_hard = 1073741824,
    cluster = "",
    namespace = "shop",
    tls_cert = "",
    tls_key = "",
    admin = "127.0.0.1:0",
    logging = own_logs
)]
async fn main(nodes: multinode::Nodes) -> () {
    assert!(nodes.id() <= nodes.count());
}

fn own_logs() {}
