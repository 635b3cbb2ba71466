#[multinode::main(nodes = 0)]
async fn main() {}
