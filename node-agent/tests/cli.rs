//! The built binary: exit codes, JSON shape, `run` against the loopback FAKE API server
//! (labels, health endpoints, JSON logs naming the node, labels kept on SIGTERM),
//! `cleanup`, and `run --publish nfd`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fake_api::FakeApi;
use common::fake_sys::FakeRoot;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_mshv-node-agent");
const CAPABLE: &str = "mshv.node.hyperv-layered.io/capable";
const PTYPE: &str = "mshv.node.hyperv-layered.io/partition-type";
const PROBE: &str = "mshv.node.hyperv-layered.io/probe";

fn agent(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("NODE_NAME")
        .env_remove("HOST_ROOT")
        .output()
        .expect("run binary")
}

fn probe_json(args: &[&str]) -> (i32, Value) {
    let mut all = vec!["probe", "--json"];
    all.extend_from_slice(args);
    let out = agent(&all);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "probe --json printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out.status.code().expect("exit code"), json)
}

fn steps(json: &Value) -> Vec<(String, String)> {
    json["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap_or("").to_string(),
                s["result"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// This machine is not a Hyper-V parent partition, so the state is decided by CPUID.
fn expected_host_state() -> &'static str {
    "not-hyperv"
}

#[test]
fn real_probe_says_not_capable_with_a_reason_and_exits_1() {
    let (code, json) = probe_json(&[]);
    assert_eq!(code, 1, "{json:#}");
    assert_eq!(json["capable"], false);
    assert_eq!(json["state"], expected_host_state());
    assert!(
        json["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not running on Microsoft Hypervisor")),
        "{json:#}"
    );
    assert_eq!(json["partition_type"], "none");

    let out = agent(&["probe"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("mshv probe: NOT CAPABLE (not-hyperv)"),
        "{text}"
    );
    for header in [
        "STEP",
        "RESULT",
        "MEANING",
        "WHAT TO DO",
        "cpuid",
        "fingerprint",
    ] {
        assert!(text.contains(header), "missing {header}: {text}");
    }
}

#[test]
fn json_shape_is_stable() {
    let (_, json) = probe_json(&[]);
    let keys: Vec<&str> = json
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    for k in [
        "capable",
        "state",
        "reason",
        "action",
        "partition_type",
        "hv_vendor",
        "hv_build",
        "hv_version",
        "uapi",
        "errno",
        "errno_name",
        "device",
        "self_privileges",
        "partition_created_and_closed",
        "kernel_release",
        "host_root",
        "steps",
        "duration_us",
    ] {
        assert!(keys.contains(&k), "missing key {k}: {keys:?}");
    }
    let names: Vec<String> = steps(&json).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "cpuid",
            "proc-misc",
            "sysfs",
            "device",
            "open",
            "fingerprint",
            "self-query"
        ]
    );
}

#[test]
fn fake_host_roots_show_each_file_step() {
    // A driver and a regular file where /dev/mshv should be.
    let root = FakeRoot::new().with_driver(58);
    root.write("dev/mshv", "not a device");
    let host_root = root.path().to_str().expect("utf8");
    let (code, json) = probe_json(&["--host-root", host_root]);
    assert_eq!(code, 1);
    assert_eq!(json["host_root"], host_root);
    assert_eq!(json["kernel_release"], "6.18.0-test");
    assert_eq!(json["device"]["minor"], 58);
    let s = steps(&json);
    assert!(s.contains(&("proc-misc".into(), "pass".into())), "{s:?}");
    assert!(s.contains(&("sysfs".into(), "pass".into())), "{s:?}");
    assert!(s.contains(&("device".into(), "fail".into())), "{s:?}");
    let device = json["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["step"] == "device")
        .expect("device");
    assert!(
        device["detail"]
            .as_str()
            .is_some_and(|d| d.contains("regular file")),
        "{device}"
    );

    // No device at all.
    let root = FakeRoot::new().with_driver(58);
    let (_, json) = probe_json(&["--host-root", root.path().to_str().expect("utf8")]);
    let device = json["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["step"] == "device")
        .expect("device");
    assert_eq!(device["errno"], libc::ENOENT);

    // A real char device with matching numbers (root only).
    let root = FakeRoot::new().with_driver(58);
    if root.mknod_char(10, 58).is_some() {
        let (_, json) = probe_json(&["--host-root", root.path().to_str().expect("utf8")]);
        assert!(
            steps(&json).contains(&("device".into(), "pass".into())),
            "{json:#}"
        );
        // CPUID already ruled the node out, so the agent does not open it.
        assert!(
            steps(&json).contains(&("open".into(), "skip".into())),
            "{json:#}"
        );
    }
}

#[test]
fn probe_error_exits_2() {
    let (code, json) = probe_json(&["--host-root", "/nonexistent/host"]);
    assert_eq!(code, 2);
    assert_eq!(json["state"], "error");
    assert_eq!(json["errno_name"], "ENOENT");
}

#[test]
fn bad_flags_are_rejected() {
    let out = agent(&["run", "--node-name", "n", "--label-prefix", "Not_A_Domain/"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DNS subdomain"));
    let out = agent(&["run", "--node-name", "n", "--interval", "0s"]);
    assert_eq!(out.status.code(), Some(2));
    let out = agent(&["run"]);
    assert_eq!(out.status.code(), Some(2), "node name is required");
}

// ---------- run ----------

struct Running {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn start(args: &[&str], kubeconfig: Option<&Path>) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.args(args);
        // Never reach a real kubelet from a test: the plugin only where a test asks for it.
        if args.first() == Some(&"run") && !args.iter().any(|a| a.starts_with("--device-plugin")) {
            cmd.arg("--device-plugin=false");
        }
        cmd.env_remove("NODE_NAME")
            .env_remove("HOST_ROOT")
            .env_remove("POD_NAMESPACE")
            .env_remove("POD_NAME")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        match kubeconfig {
            Some(k) => cmd.env("KUBECONFIG", k),
            None => cmd.env("KUBECONFIG", "/nonexistent"),
        };
        let mut child = cmd.spawn().expect("spawn agent");
        let stderr = child.stderr.take().expect("stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("lines").push(line);
            }
        });
        Self {
            child,
            lines,
            reader: Some(reader),
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }

    fn metrics_addr(&self) -> Option<SocketAddr> {
        self.lines().iter().find_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            v["addr"].as_str()?.parse().ok()
        })
    }

    // std can only SIGKILL a child; the test needs SIGTERM, which takes libc::kill.
    #[allow(unsafe_code)]
    fn sigterm_and_wait(mut self) -> (i32, Vec<String>) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0);
        let status = wait_timeout(&mut self.child, Duration::from_secs(20))
            .expect("agent exits after SIGTERM");
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        (status, self.lines())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_timeout(child: &mut Child, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}

fn assert_every_line_is_json_naming(lines: &[String], node: &str) {
    assert!(!lines.is_empty());
    for l in lines {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert_eq!(v["span"]["node"], node, "line without the node name: {l}");
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{l}");
    }
}

#[test]
fn run_publishes_serves_health_and_keeps_labels_on_sigterm() {
    let node = "worker-7";
    let api = FakeApi::start(node);
    let tmp = tempfile::tempdir().expect("tmp");
    let kubeconfig = api.write_kubeconfig(tmp.path());
    let root = FakeRoot::new().with_driver(58);
    let agent = Running::start(
        &[
            "run",
            "--node-name",
            node,
            "--interval",
            "100ms",
            "--heartbeat",
            "1h",
            "--metrics-addr",
            "127.0.0.1:0",
            "--host-root",
            root.path().to_str().expect("utf8"),
        ],
        Some(&kubeconfig),
    );
    assert!(
        wait_until(Duration::from_secs(20), || api.apply_count() >= 1),
        "no apply: {:#?}",
        agent.lines()
    );
    let addr = agent.metrics_addr().expect("metrics address logged");
    assert_eq!(http_get(addr, "/healthz").map(|r| r.0), Some(200));
    assert_eq!(http_get(addr, "/readyz").map(|r| r.0), Some(200));
    let (code, metrics) = http_get(addr, "/metrics").expect("metrics");
    assert_eq!(code, 200);
    for name in [
        "mshv_node_agent_capable{",
        "mshv_node_agent_probes_total{result=\"not-hyperv\"}",
        "mshv_node_agent_probe_duration_seconds_bucket",
        "mshv_node_agent_label_syncs_total{result=\"applied\"} 1",
    ] {
        assert!(metrics.contains(name), "missing {name}:\n{metrics}");
    }
    // Several probes, still one write: nothing changed (and the Node has no heartbeat).
    assert!(wait_until(Duration::from_secs(20), || {
        http_get(addr, "/metrics").is_some_and(|(_, m)| {
            m.contains("mshv_node_agent_label_syncs_total{result=\"unchanged\"}")
        })
    }));
    // The liveness Lease: in the kubeconfig's namespace (no POD_NAMESPACE), held by the
    // node (no POD_NAME), owned by the Node.
    assert!(
        wait_until(Duration::from_secs(20), || api.lease_renewals() >= 1),
        "no Lease renewal: {:#?}",
        agent.lines()
    );
    let lease = api
        .lease("default", "mshv-node-agent-worker-7")
        .expect("Lease default/mshv-node-agent-worker-7");
    assert_eq!(lease["spec"]["holderIdentity"], node);
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 240);
    assert_eq!(
        lease["metadata"]["ownerReferences"][0]["uid"],
        common::fake_api::NODE_UID
    );
    let (_, status) = http_get(addr, "/status").expect("status");
    let status: Value = serde_json::from_str(&status).expect("status JSON");
    assert_eq!(status["lease"]["name"], "mshv-node-agent-worker-7");
    assert_eq!(status["lease"]["last_result"], "renewed");
    let (_, metrics) = http_get(addr, "/metrics").expect("metrics");
    assert!(
        metrics.contains("mshv_node_agent_lease_renewals_total{result=\"ok\"} 1"),
        "{metrics}"
    );

    let (status, lines) = agent.sigterm_and_wait();
    assert_eq!(status, 0, "{lines:#?}");
    assert_eq!(api.apply_count(), 1);
    assert_eq!(api.violations(), Vec::<String>::new());
    // On this host: not capable, so no `capable` label, but the rest is there and stays.
    let labels = api.labels();
    assert!(!labels.contains_key(CAPABLE));
    assert_eq!(labels.get(PTYPE).map(String::as_str), Some("none"));
    let ann: Value = serde_json::from_str(&api.annotations()[PROBE]).expect("annotation JSON");
    assert_eq!(ann["state"], "not-hyperv");
    assert_eq!(ann["agent_version"], env!("CARGO_PKG_VERSION"));
    assert_every_line_is_json_naming(&lines, node);
    assert!(
        lines.iter().any(|l| l.contains("SIGTERM received")),
        "{lines:#?}"
    );
    // `--heartbeat 1h` (older manifests) is accepted, ignored and warned about.
    assert!(
        lines
            .iter()
            .any(|l| l.contains("WARN") && l.contains("--heartbeat is deprecated and ignored")),
        "{lines:#?}"
    );
}

#[test]
fn run_rejects_a_lease_shorter_than_its_renew_interval() {
    let api = FakeApi::start("worker-11");
    let tmp = tempfile::tempdir().expect("tmp");
    let kubeconfig = api.write_kubeconfig(tmp.path());
    let agent = Running::start(
        &[
            "run",
            "--node-name",
            "worker-11",
            "--metrics-addr",
            "127.0.0.1:0",
            "--lease-renew-interval",
            "60s",
            "--lease-duration",
            "30s",
        ],
        Some(&kubeconfig),
    );
    let mut agent = agent;
    assert!(
        wait_until(Duration::from_secs(20), || agent.lines().iter().any(|l| l
            .contains("--lease-duration")
            && l.contains("must be longer"))),
        "{:#?}",
        agent.lines()
    );
    let status = wait_timeout(&mut agent.child, Duration::from_secs(20)).expect("exits");
    assert_eq!(status, 1);
    assert!(api.requests().is_empty(), "{:#?}", api.requests());
}

#[test]
fn run_keeps_going_when_the_api_is_down() {
    let node = "worker-8";
    let api = FakeApi::start(node);
    let tmp = tempfile::tempdir().expect("tmp");
    let kubeconfig = api.write_kubeconfig(tmp.path());
    api.push_faults(std::iter::repeat_n(common::fake_api::Fault::Status(500), 3));
    let agent = Running::start(
        &[
            "run",
            "--node-name",
            node,
            "--interval",
            "50ms",
            "--metrics-addr",
            "127.0.0.1:0",
            "--max-backoff",
            "200ms",
        ],
        Some(&kubeconfig),
    );
    assert!(
        wait_until(Duration::from_secs(30), || api.labels().contains_key(PTYPE)),
        "never recovered: {:#?}",
        agent.lines()
    );
    let (status, lines) = agent.sigterm_and_wait();
    assert_eq!(status, 0);
    assert_eq!(api.apply_count(), 4, "3 failures then 1 success");
    assert_every_line_is_json_naming(&lines, node);
    assert_eq!(
        lines.iter().filter(|l| l.contains("will retry")).count(),
        3,
        "{lines:#?}"
    );
}

#[test]
fn cleanup_removes_the_agents_labels() {
    let node = "worker-9";
    let api = FakeApi::start(node);
    let tmp = tempfile::tempdir().expect("tmp");
    let kubeconfig = api.write_kubeconfig(tmp.path());
    let agent = Running::start(
        &[
            "run",
            "--node-name",
            node,
            "--interval",
            "1h",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        Some(&kubeconfig),
    );
    assert!(wait_until(Duration::from_secs(20), || api
        .labels()
        .contains_key(PTYPE)));
    let (status, _) = agent.sigterm_and_wait();
    assert_eq!(status, 0);
    api.set_foreign_label("kubernetes.io/hostname", node);

    let out = Command::new(BIN)
        .args(["cleanup", "--node-name", node])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .expect("cleanup");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let labels = api.labels();
    assert_eq!(
        labels.keys().collect::<Vec<_>>(),
        vec!["kubernetes.io/hostname"]
    );
    assert!(api.annotations().is_empty());
    assert_eq!(api.violations(), Vec::<String>::new());
}

#[test]
fn cleanup_fails_loudly_without_an_api() {
    let out = Command::new(BIN)
        .args(["cleanup", "--node-name", "n"])
        .env("KUBECONFIG", "/nonexistent")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("cleanup");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("credentials"), "{stderr}");
    let lines: Vec<String> = stderr.lines().map(str::to_string).collect();
    assert_every_line_is_json_naming(&lines, "n");
}

#[test]
fn run_with_nfd_writes_the_features_file_and_keeps_it() {
    let node = "worker-10";
    let dir = tempfile::tempdir().expect("tmp");
    let nfd_dir = dir.path().join("features.d");
    let agent = Running::start(
        &[
            "run",
            "--node-name",
            node,
            "--publish",
            "nfd",
            "--nfd-dir",
            nfd_dir.to_str().expect("utf8"),
            "--interval",
            "100ms",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        None,
    );
    let file = nfd_dir.join("mshv-node-agent");
    assert!(
        wait_until(Duration::from_secs(20), || file.exists()),
        "{:#?}",
        agent.lines()
    );
    let (status, lines) = agent.sigterm_and_wait();
    assert_eq!(status, 0, "{lines:#?}");
    let text = std::fs::read_to_string(&file).expect("features file");
    assert!(text.contains("# +expiry-time="), "{text}");
    assert!(
        text.contains("mshv.node.hyperv-layered.io/partition-type=none"),
        "{text}"
    );
    assert!(!text.contains(CAPABLE), "{text}");
    assert_every_line_is_json_naming(&lines, node);

    let out = Command::new(BIN)
        .args([
            "cleanup",
            "--node-name",
            node,
            "--publish",
            "nfd",
            "--nfd-dir",
            nfd_dir.to_str().expect("utf8"),
        ])
        .output()
        .expect("cleanup");
    assert_eq!(out.status.code(), Some(0));
    assert!(!file.exists());
}

/// The built binary serves the device plugin: registration with a (fake) kubelet in
/// `--device-plugin-dir`, `registered` in /metrics and /status, the socket removed on SIGTERM.
#[test]
fn run_registers_the_device_plugin_and_reports_it() {
    let node = "worker-dp";
    let root = FakeRoot::new().with_driver(58);
    let nfd = tempfile::tempdir().expect("nfd");
    let plugins = tempfile::tempdir().expect("device-plugins");
    let (regs, stop_kubelet) = common::fake_kubelet::start_kubelet_thread(plugins.path());
    let agent = Running::start(
        &[
            "run",
            "--node-name",
            node,
            "--interval",
            "100ms",
            "--metrics-addr",
            "127.0.0.1:0",
            "--host-root",
            root.path().to_str().expect("utf8"),
            "--publish",
            "nfd",
            "--nfd-dir",
            nfd.path().to_str().expect("utf8"),
            "--device-plugin-dir",
            plugins.path().to_str().expect("utf8"),
            "--device-count",
            "8",
        ],
        None,
    );
    let req = regs
        .recv_timeout(Duration::from_secs(20))
        .expect("the binary registers with kubelet");
    assert_eq!(req.resource_name, "devices.kubevirt.io/mshv");
    assert_eq!(req.endpoint, "mshv-node-agent-mshv.sock");
    let sock = plugins.path().join("mshv-node-agent-mshv.sock");
    assert!(sock.exists());

    assert!(wait_until(Duration::from_secs(20), || agent
        .metrics_addr()
        .is_some()));
    let addr = agent.metrics_addr().expect("metrics addr");
    assert!(wait_until(Duration::from_secs(20), || http_get(
        addr, "/metrics"
    )
    .is_some_and(
        |(_, b)| b.contains("mshv_node_agent_device_plugin_state{state=\"registered\"} 1")
    )));
    let (code, body) = http_get(addr, "/status").expect("/status");
    assert_eq!(code, 200);
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["device_plugin"]["state"], "registered");
    assert_eq!(v["device_plugin"]["devices"], 8);
    assert_eq!(v["published"]["target"], "nfd");

    let (status, lines) = agent.sigterm_and_wait();
    assert_eq!(status, 0);
    assert_every_line_is_json_naming(&lines, node);
    assert!(!sock.exists(), "the socket is removed on shutdown");
    drop(stop_kubelet);
}
