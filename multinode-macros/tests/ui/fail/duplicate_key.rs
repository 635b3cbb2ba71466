#[multinode::main(port = 8080, nodes = 2, port = 8081)]
async fn main() {}
