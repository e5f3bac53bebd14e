//! The `weir` binary. Skeleton: see the crate docs of `weir-server`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

const USAGE: &str = "\
usage: weir <command>

commands:
  serve        run the server (not built yet)

options:
  -h, --help   print this help
  --version    print the version";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => {
            eprintln!(
                "weir: the server is not built yet (see README: milestone 'server on tokio')"
            );
            ExitCode::from(2)
        }
        Some("--version" | "-V") if args.len() == 1 => {
            // Version and help go to stdout, where scripts expect them.
            #[allow(clippy::print_stdout)]
            {
                println!("weir {}", env!("CARGO_PKG_VERSION"));
            }
            ExitCode::SUCCESS
        }
        Some("-h" | "--help" | "help") if args.len() == 1 => {
            #[allow(clippy::print_stdout)]
            {
                println!("{USAGE}");
            }
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("weir: unknown command or option `{other}`\n\n{USAGE}");
            ExitCode::from(2)
        }
        None => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
