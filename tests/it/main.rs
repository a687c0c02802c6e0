//! The integration tests, one binary: the harness in `support` is compiled once and every topic
//! module shares it (one link of the dependencies instead of one per topic).
//!
//! A topic runs alone with its module path as the filter, e.g. `cargo test --test it faults::`.

mod support;

mod chart;
mod cli;
mod dashboard;
mod engine;
mod faults;
mod flux_oracle;
mod harness;
mod hostile;
mod notify;
mod policy_props;
mod policy_table;
mod reasons;
mod records;
mod referrers;
mod registry;
mod server;
