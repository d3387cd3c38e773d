fn main() -> std::process::ExitCode {
    bansync::cli::main()
}
