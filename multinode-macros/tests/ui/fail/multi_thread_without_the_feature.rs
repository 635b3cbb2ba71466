// multinode's `multi-thread` feature is off (the default).
#[multinode::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {}
