//! The parts of secops' DNS resolver that know DNS and nothing of the daemon: reading an
//! agent's question and writing its answer ([`message`]), asking upstream ([`upstream`]),
//! and keeping answers for their TTL ([`cache`]). The door that decides which questions are
//! answered is `daemon/dns/`.

pub(crate) mod cache;
pub(crate) mod message;
pub(crate) mod upstream;
