//! Nothing but the benches (benches/cedar.rs).
