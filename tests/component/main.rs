//! Component tests: every test loads the real strategy components built by
//! `cargo xtask build` and runs them through the real host. PostgreSQL cases need
//! `DPONE_TEST_POSTGRES_URL` (set by `cargo xtask test`, which starts a private server).

mod backfill;
mod behaviour;
mod bigquery;
mod cdc;
mod cli;
mod clickhouse;
mod docs;
mod kafka;
mod partitions;
mod registry;
mod rest;
#[path = "../../xtask/src/rest_mock.rs"]
mod rest_api;
mod sandbox;
mod strategies;
mod support;
