//! The `devloop` binary: everything happens in the library.

fn main() -> std::process::ExitCode {
    devloop::run(std::env::args_os())
}
