//! Integration tests: the real `devloop` binary against sample projects in temp directories.
//! Tiers that need Docker skip with a message unless `DEVLOOP_REQUIRE_TIERS` requires them.

mod build;
mod cli;
mod cluster;
mod common;
mod config_errors;
mod doctor;
mod init;
mod render;
mod schema;
