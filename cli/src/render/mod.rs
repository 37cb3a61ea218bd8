pub fn run(_a: &RenderArgs) -> Result<u8, crate::error::CliError> { Ok(0) }
#[derive(clap::Args)] pub struct RenderArgs {}
