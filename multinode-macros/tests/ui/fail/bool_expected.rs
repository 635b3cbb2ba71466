#[multinode::main(restart = 1)]
async fn main() {}
