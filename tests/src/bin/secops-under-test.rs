//! The `secops` command line, built in this package so the host tests always run the
//! current code (cargo only hands a package's tests the paths of its own binaries).

fn main() -> std::process::ExitCode {
    secops_daemon::cli::main()
}
