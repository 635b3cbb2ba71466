#[multinode::main(nodes)]
async fn main() {}
