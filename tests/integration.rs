//! Every integration test in one binary: the shared fixtures (`common`,
//! `check_support`, `fault_support`) are compiled once and the suite links
//! once, instead of once per file. Each file is a module named after it, so
//! `cargo test --release --features test-hooks --test integration fix::` runs
//! tests/fix.rs alone.

mod check_support;
mod common;
mod fault_support;

mod changed;
mod check_concurrent;
mod check_kinds;
mod check_latency;
mod check_number;
mod check_options;
mod check_pg_down;
mod check_stats;
mod cluster;
mod command_meta;
mod config_db;
mod exact_numbers;
mod exporter;
mod fault_keys;
mod fault_lanes;
mod fault_pg;
mod fix;
mod fuzz;
mod harness_smoke;
mod install_checks;
mod key_templates;
mod layouts;
mod log_safety;
mod lua_scripts;
mod multi;
mod paused_writes;
mod pg_tls;
mod purge;
mod replication;
mod rules_files;
mod schedule;
mod soak;
mod watch;
mod wrappers;
