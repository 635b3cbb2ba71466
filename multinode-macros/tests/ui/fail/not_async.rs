#[multinode::main]
fn main() {}
