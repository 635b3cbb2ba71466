#[multinode::main]
async fn main(nodes: u32) {}
