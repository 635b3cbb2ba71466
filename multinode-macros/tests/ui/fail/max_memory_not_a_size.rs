// A memory size the runtime would not read is a compile error at the value.
#[multinode::main(max_memory = "12Q")]
async fn main() {}
