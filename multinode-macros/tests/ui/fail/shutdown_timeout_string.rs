#[multinode::main(shutdown_timeout = "30s")]
async fn main() {}
