//! Prints how many MQTT specification statements the tests reference, per crate and per
//! specification version; see [`mqtt_tests::spec_coverage`] for what counts.
//!
//! Usage: `cargo run -p mqtt-tests --bin spec-coverage [-- --list]`. With `--list`, also
//! prints the statements no test references yet. Exits with status 1 when a test
//! references an unknown statement id, 2 on usage or I/O errors.

use std::process::ExitCode;

use mqtt_tests::spec_coverage::{scan_workspace, workspace_root};

fn main() -> ExitCode {
    let mut list = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--list" => list = true,
            "-h" | "--help" => {
                println!("usage: spec-coverage [--list]");
                return ExitCode::SUCCESS;
            }
            _ => {
                eprintln!("spec-coverage: unknown argument {arg:?}\nusage: spec-coverage [--list]");
                return ExitCode::from(2);
            }
        }
    }
    let coverage = match scan_workspace(&workspace_root()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("spec-coverage: {e}");
            return ExitCode::from(2);
        }
    };
    print!("{}", coverage.table());
    if list {
        print!("{}", coverage.unreferenced_report());
    }
    if coverage.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("\nunknown statement ids:");
        for e in &coverage.errors {
            eprintln!("  {e}");
        }
        ExitCode::FAILURE
    }
}
