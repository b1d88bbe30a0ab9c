//! The `corestatsd` binary: flags → `Config` → `run`. No logic lives here.

use clap::Parser;

use corestatsd::config::{Config, Flags};

fn main() {
    let flags = Flags::parse();
    let cfg = match Config::from_flags(flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("corestatsd: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = corestatsd::run::run(cfg) {
        eprintln!("corestatsd: {e}");
        std::process::exit(e.status);
    }
}
