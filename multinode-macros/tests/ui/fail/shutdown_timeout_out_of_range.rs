// A week is the most the runtime takes: ten days is a compile error at the value.
#[multinode::main(shutdown_timeout = 864000)]
async fn main() {}
