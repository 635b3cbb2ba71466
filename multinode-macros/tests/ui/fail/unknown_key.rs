#[multinode::main(prot = 8080)]
async fn main() {}
