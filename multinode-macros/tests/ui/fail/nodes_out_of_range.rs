// The runtime serves at most 1024 nodes: more is a compile error at the value.
#[multinode::main(nodes = 2000)]
async fn main() {}
