// The attribute with no keys, and a main with no parameter.
#[multinode::main]
async fn main() {}
