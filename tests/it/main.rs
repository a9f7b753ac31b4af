//! Integration tests: the real `devloop` binary against sample projects in temp directories.
//! Tiers that need Docker skip with a message unless `DEVLOOP_REQUIRE_TIERS` requires them.

mod backup;
mod build;
mod cli;
mod cluster;
mod common;
mod config_errors;
mod doctor;
mod forward;
mod init;
mod logs;
mod minikube_docker;
mod outage;
mod render;
mod schema;
mod up;
mod watch;
