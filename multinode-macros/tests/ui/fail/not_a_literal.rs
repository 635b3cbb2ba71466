const PORT: u16 = 8080;
#[multinode::main(port = PORT)]
async fn main() {}
