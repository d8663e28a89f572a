//! The `anchorage` binary: see [`anchor::cli`].

fn main() -> std::process::ExitCode {
    anchor::cli::main()
}
