//! `run` with guest verification and the bench scheduled: against the loopback FAKE API
//! server, on a fake host root whose `dev/mshv` is /dev/null (opens, refuses every ioctl:
//! the verification fails) and whose `dev/kvm` is the real /dev/kvm where that opens (the
//! start-up bench then measures KVM for real). Checks the label, /status and the metrics.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fake_api::FakeApi;
use common::fake_sys::FakeRoot;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_mshv-node-agent");

fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

#[test]
fn run_publishes_guest_verified_false_and_the_bench_metrics() {
    let node = "worker-9";
    let api = FakeApi::start(node);
    let tmp = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(tmp.path());
    let root = FakeRoot::new().with_driver(58);
    let dev = root.path().join("dev");
    std::fs::create_dir_all(&dev).unwrap();
    let _ = std::fs::remove_file(dev.join("mshv"));
    std::os::unix::fs::symlink("/dev/null", dev.join("mshv")).unwrap();
    let kvm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if kvm {
        std::os::unix::fs::symlink("/dev/kvm", dev.join("kvm")).unwrap();
    } else {
        eprintln!("no openable /dev/kvm: the KVM bench half of this test is skipped");
    }
    let mut child = Command::new(BIN)
        .args([
            "run",
            "--node-name",
            node,
            "--interval",
            "200ms",
            "--heartbeat",
            "1h",
        ])
        .args(["--metrics-addr", "127.0.0.1:0", "--device-plugin=false"])
        .args(["--device-mode", "keep"])
        .arg("--host-root")
        .arg(root.path())
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("NODE_NAME")
        .env_remove("HOST_ROOT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = Arc::clone(&lines);
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let label = vocab::GUEST_VERIFIED_NODE_LABEL;
    let labelled = wait_until(Duration::from_secs(30), || {
        api.labels().get(label).map(String::as_str) == Some("false")
    });
    let addr: Option<SocketAddr> = lines.lock().unwrap().iter().find_map(|l| {
        let v: Value = serde_json::from_str(l).ok()?;
        v["addr"].as_str()?.parse().ok()
    });
    let metrics_ok = |m: &str| {
        m.contains("mshv_node_agent_guest_verified{} 0")
            && m.contains("mshv_node_agent_guest_verifications_total{result=\"error\"} 1")
            && m.contains("mshv_node_agent_bench_runs_total{hypervisor=\"mshv\",result=\"unavailable\"} 1")
            && (!kvm
                || m.contains(
                    "mshv_node_agent_bench_seconds{hypervisor=\"kvm\",scenario=\"exit-to-vmm\",quantile=\"0.5\"}",
                ))
    };
    let mut metrics = String::new();
    let got_metrics = addr.is_some_and(|addr| {
        wait_until(Duration::from_secs(30), || {
            metrics = http_get(addr, "/metrics").unwrap_or_default();
            metrics_ok(&metrics)
        })
    });
    let status: Value = addr
        .and_then(|a| http_get(a, "/status"))
        .and_then(|b| serde_json::from_str(&b).ok())
        .unwrap_or(Value::Null);
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    let log = lines.lock().unwrap().join("\n");
    assert!(
        labelled,
        "no guest-verified=false label: {:?}\n{log}",
        api.labels()
    );
    assert!(got_metrics, "metrics incomplete:\n{metrics}\n{log}");
    if kvm {
        // `ok`, or `error` when this loaded machine used up the 2 s budget before the last
        // scenarios (the numbers measured until then are still exported).
        let row = &status["bench"]["hypervisors"][0];
        assert_eq!(row["hypervisor"], "kvm", "{status}");
        let result = row["result"].as_str().unwrap_or_default().to_string();
        assert!(
            metrics.contains(&format!(
                "mshv_node_agent_bench_runs_total{{hypervisor=\"kvm\",result=\"{result}\"}} 1"
            )),
            "{metrics}"
        );
        if result == "ok" {
            assert!(
                metrics.contains(
                    "mshv_node_agent_bench_last_run_timestamp_seconds{hypervisor=\"kvm\"}"
                )
            );
            assert!(
                metrics.contains("mshv_node_agent_bench_guest_compute_ratio{hypervisor=\"kvm\"}")
            );
        } else {
            assert!(
                row["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("time budget"),
                "{row}"
            );
        }
    }
    // The mshv row has no numbers: no stale or invented series.
    assert!(!metrics.contains("mshv_node_agent_bench_seconds{hypervisor=\"mshv\""));
    assert_eq!(status["guest_verification"]["verified"], false, "{status}");
    assert_eq!(
        status["guest_verification"]["errno_name"], "ENOTTY",
        "{status}"
    );
    // `capable` keeps its own meaning: this fake root is not a Hyper-V host, so no label.
    assert!(!api.labels().contains_key(vocab::CAPABLE_NODE_LABEL));
}
