//! secops VM tests. The binary `secops-vm-runner` runs inside the guest that
//! `cargo xtask vm-test` boots; this library holds what both sides share: the result lines
//! on the serial console ([`protocol`]), and the attack suite program `secops-attack`
//! ([`attack`]) with its output format.

pub mod attack;
pub mod protocol;
