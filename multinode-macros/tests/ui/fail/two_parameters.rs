#[multinode::main]
async fn main(nodes: multinode::Nodes, extra: u32) {}
