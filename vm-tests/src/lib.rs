//! secops VM tests. The binary `secops-vm-runner` runs inside the guest that
//! `cargo xtask vm-test` boots; this library holds what both sides share: the result lines
//! on the serial console ([`protocol`]).

pub mod protocol;
