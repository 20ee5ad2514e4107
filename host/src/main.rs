//! `weft`: the workflow-automation host and its command line.

use clap::Parser;

#[global_allocator]
static ALLOCATOR: weft_host::Allocator = weft_host::Allocator;

fn main() -> std::process::ExitCode {
    let cli = weft_host::cli::Cli::parse();
    weft_host::logging::init(cli.log_format(), cli.plugin_log());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli.run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
