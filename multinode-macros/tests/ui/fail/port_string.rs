#[multinode::main(port = "8080")]
async fn main() {}
