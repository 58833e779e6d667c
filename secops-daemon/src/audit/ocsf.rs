//! OCSF export of audit records (being written).
