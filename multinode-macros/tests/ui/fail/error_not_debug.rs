struct NotDebug;

#[multinode::main]
async fn main() -> Result<(), NotDebug> {
    Ok(())
}
