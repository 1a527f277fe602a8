//! `GET /status` over real HTTP (axum on 127.0.0.1:0): the probe with state and errno, what
//! was published, the device plugin state, the device access pass, the last error,
//! versions, and the hypervisor build warning.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use common::fake_sys::{FakeRoot, SwitchSys};
use mshv_node_agent::health::{self, AgentState};
use mshv_node_agent::metrics::Metrics;
use mshv_node_agent::probe::{ProbeOptions, Prober};
use serde_json::Value;

/// One HTTP/1.1 GET on a blocking socket (run off the async thread).
fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP response");
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    (code, head.to_string(), body.to_string())
}

#[tokio::test]
async fn status_reports_probe_publication_plugin_and_versions() {
    let health = Arc::new(AgentState::new(Metrics::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(health::serve(listener, Arc::clone(&health), async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));

    // Before any probe: valid JSON, no probe yet.
    let (code, head, body) = tokio::task::spawn_blocking(move || get(addr, "/status"))
        .await
        .expect("join");
    assert_eq!(code, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert!(v["probe"].is_null());
    assert_eq!(v["agent_version"], env!("CARGO_PKG_VERSION"));

    // A capable L1VH probe on hypervisor build 26102 (outside the driver's validated range).
    let root = FakeRoot::new().with_driver(58);
    let report = Prober::new(
        SwitchSys::l1vh(),
        ProbeOptions {
            host_root: root.path().to_path_buf(),
            self_query: false,
            fingerprint_max_age: Duration::ZERO,
        },
    )
    .probe();
    health.record_probe(&report);
    health.update_status(|s| {
        s.published.target = "api".into();
        s.published
            .labels
            .insert("mshv.node.hyperv-layered.io/capable".into(), "true".into());
        s.record_error("publish", "API request failed: 503".into());
    });
    mshv_node_agent::device_plugin::lifecycle::report_disabled(&health);

    let (code, _, body) = tokio::task::spawn_blocking(move || get(addr, "/status"))
        .await
        .expect("join");
    assert_eq!(code, 200);
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["probe"]["state"], "capable");
    assert_eq!(v["probe"]["capable"], true);
    assert_eq!(v["probe"]["errno_name"], "EINVAL");
    assert_eq!(v["probe"]["errno"], libc::EINVAL);
    assert_eq!(v["probe"]["partition_type"], "l1vh");
    assert_eq!(v["kernel"], "6.18.0-test");
    assert_eq!(v["hypervisor"]["build"], 26102);
    assert_eq!(v["hypervisor"]["build_check"]["supported"], false);
    assert_eq!(v["hypervisor"]["build_check"]["min"], 27744);
    assert_eq!(v["hypervisor"]["build_check"]["max"], 27751);
    assert!(
        v["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("26102") && w.contains("27744..=27751")),
        "{v:#}"
    );
    assert_eq!(
        v["published"]["labels"]["mshv.node.hyperv-layered.io/capable"],
        "true"
    );
    assert_eq!(v["device_plugin"]["state"], "disabled");
    assert_eq!(v["last_error"]["component"], "publish");
    assert!(v["last_error"]["at"].is_string());

    // The same facts in the metrics.
    let (_, _, metrics) = tokio::task::spawn_blocking(move || get(addr, "/metrics"))
        .await
        .expect("join");
    // One unlabelled series (a family, so it can be absent off Hyper-V parents; the
    // encoder writes empty braces, which OpenMetrics and Prometheus accept).
    assert!(
        metrics.contains("mshv_node_agent_hv_build_supported{} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "mshv_node_agent_info{{version=\"{}\",kernel=\"6.18.0-test\",hv_build=\"26102\",partition_type=\"l1vh\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("mshv_node_agent_device_plugin_state{state=\"disabled\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mshv_node_agent_device_plugin_state{state=\"registered\"} 0"),
        "{metrics}"
    );

    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("server stops")
        .expect("join")
        .expect("serve");
}
