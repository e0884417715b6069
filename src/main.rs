//! The `sidekick` binary: everything happens in the library crate.

fn main() -> std::process::ExitCode {
    sidekick::main()
}
