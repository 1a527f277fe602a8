//! `mshv-node-agent`: probes whether this node can run Microsoft Hypervisor (MSHV) guests
//! through `/dev/mshv`, and publishes the answer as Node labels (server-side apply) or as
//! a Node Feature Discovery features file, with Prometheus metrics and health endpoints.
//!
//! Pure cores (`probe` ladder over the `probe::sys` seam, `labels`, `backoff`,
//! `agent::SyncState`, `device_access::plan`, the `device_plugin` answers) with I/O at the
//! edges (`publish`, `health`, `device_plugin::{service, registration, lifecycle}`, `cli`).

pub mod agent;
pub mod backoff;
pub mod bench;
pub mod cli;
pub mod device_access;
pub mod device_plugin;
pub mod guest_verify;
pub mod health;
pub mod labels;
pub mod logging;
pub mod metrics;
pub mod probe;
pub mod publish;
pub mod status;
