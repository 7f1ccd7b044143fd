//! The `batchgen` binary: builds the runtime, parses the command line, runs it, and turns the
//! outcome into the exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = batchgen::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = std::io::Write::write_fmt(
                &mut std::io::stderr(),
                format_args!("error: cannot start the async runtime: {e}\n"),
            );
            return ExitCode::from(2);
        }
    };
    let exit = runtime.block_on(batchgen::main_with(cli));
    // Workers abandoned by a second signal must not hold the process open.
    runtime.shutdown_background();
    ExitCode::from(exit.code() as u8)
}
