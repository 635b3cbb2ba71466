// `-> Result<(), E>` with `E: Debug`, and `Nodes` imported by name.
use multinode::Nodes;

#[multinode::main(port = 0, nodes = 1, shutdown_timeout = 3)]
async fn main(mut nodes: Nodes) -> Result<(), std::io::Error> {
    let listener = nodes.take_listener().expect("the master serves by default");
    listener.local_addr()?;
    Ok(())
}
