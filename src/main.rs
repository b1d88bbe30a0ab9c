//! The `corestatsd` binary: flags → `Config` → `run`. No logic lives here.

use clap::error::ErrorKind;

use corestatsd::{Config, FlagsError};

/// Counts live heap bytes per thread, for --memory-limit-bytes (corestatsd::memory).
#[global_allocator]
static ALLOC: corestatsd::memory::CountingAlloc = corestatsd::memory::CountingAlloc;

fn main() {
    let flags = match corestatsd::parse_args(std::env::args_os().collect()) {
        Ok(f) => f,
        Err(FlagsError::Setting(e)) => {
            eprintln!("corestatsd: {e}");
            std::process::exit(2);
        }
        Err(FlagsError::Clap(e))
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) =>
        {
            e.exit()
        }
        Err(FlagsError::Clap(e)) => {
            // One line naming the flag and the bad value; `--help` has the rest.
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("bad arguments");
            eprintln!("corestatsd: {}", first.trim_start_matches("error: "));
            std::process::exit(2);
        }
    };
    if let Some(cmd) = flags.command {
        if let Err(e) = corestatsd::command(cmd) {
            eprintln!("corestatsd: {e}");
            std::process::exit(1);
        }
        return;
    }
    let cfg = match Config::from_flags(flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("corestatsd: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = corestatsd::run(cfg) {
        eprintln!("corestatsd: {e}");
        std::process::exit(e.status);
    }
}
