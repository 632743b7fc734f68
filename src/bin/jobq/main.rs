//! The `jobq` command: the library's command line ([`jobq::cli::run`]).

fn main() -> std::process::ExitCode {
    jobq::cli::run(std::env::args_os())
}
