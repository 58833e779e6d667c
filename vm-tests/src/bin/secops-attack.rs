//! `secops-attack`: tries each attack of the suite from inside an agent cgroup and reports
//! every one on its own line (see `secops_vm_tests::attack`). It does real damage to the
//! paths and pids it is given when nothing enforces: run it only against fixtures made for it.

use std::process::ExitCode;

fn main() -> ExitCode {
    secops_vm_tests::attack::main(std::env::args_os().skip(1).collect())
}
