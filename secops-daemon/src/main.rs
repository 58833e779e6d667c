fn main() -> std::process::ExitCode {
    secops_daemon::cli::main()
}
