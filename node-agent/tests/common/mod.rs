//! Shared test fixtures.
#![allow(dead_code)]

pub mod fake_api;
pub mod fake_kubelet;
pub mod fake_sys;
pub mod plugin_socket;
