//! Rerunnable measurements for mshv-node-agent (a plain program, `harness = false`):
//!
//!   CARGO_TARGET_DIR=/tmp/target-agent cargo bench -p mshv-node-agent --bench agent
//!
//! Prints a markdown table of:
//! - probe wall time on a fake host root (median / p99 / max over N probes), for the full
//!   ladder (fake CPUID + ioctls, real file reads) and for the real seam (HostSys);
//! - wall time of the release binary's `probe --json` as a process;
//! - steady-state RSS of `run` against the loopback FAKE API server after N cycles;
//! - API writes when nothing changes, counted at the fake server and scaled to the
//!   defaults (measured, not asserted): Node writes per hour per idle node, and Lease
//!   renewals per hour. `BENCH_BASELINE_BIN=<older agent binary>` also measures an agent
//!   from before the Lease (it took `--heartbeat`) the same way, for a before/after pair.
//!
//! Nothing here asserts a target; it reports what it measured.

#[path = "../tests/common/fake_api.rs"]
mod fake_api;
#[path = "../tests/common/fake_sys.rs"]
mod fake_sys;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fake_api::FakeApi;
use fake_sys::{FakeRoot, SwitchSys};
use mshv_node_agent::probe::sys::{HostSys, Sys};
use mshv_node_agent::probe::{ProbeOptions, Prober};

const BIN: &str = env!("CARGO_BIN_EXE_mshv-node-agent");

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Stats {
    median: Duration,
    p99: Duration,
    max: Duration,
    mean: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let n = samples.len().max(1);
    let at = |q: f64| samples[((n as f64 * q).ceil() as usize).clamp(1, n) - 1];
    let total: Duration = samples.iter().sum();
    Stats {
        median: at(0.5),
        p99: at(0.99),
        max: samples.last().copied().unwrap_or_default(),
        mean: total / n as u32,
    }
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn time_probes<S: Sys>(prober: &mut Prober<S>, n: u64) -> (Stats, String) {
    // Warm up page cache and allocator.
    for _ in 0..100 {
        std::hint::black_box(prober.probe());
    }
    let mut samples = Vec::with_capacity(n as usize);
    let mut state = String::new();
    for _ in 0..n {
        let t = Instant::now();
        let report = std::hint::black_box(prober.probe());
        samples.push(t.elapsed());
        state = report.state.as_str().to_string();
    }
    (stats(samples), state)
}

fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    Some(buf)
}

fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn mib(kib: Option<u64>) -> String {
    kib.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
        .unwrap_or_else(|| "?".into())
}

struct Agent {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    fn metrics_addr(&self) -> Option<SocketAddr> {
        let lines = self.lines.lock().ok()?;
        lines.iter().find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            v["addr"].as_str()?.parse().ok()
        })
    }
}

fn spawn_agent(args: &[&str], kubeconfig: &std::path::Path) -> Agent {
    spawn_agent_bin(BIN, args, kubeconfig)
}

fn spawn_agent_bin(bin: &str, args: &[&str], kubeconfig: &std::path::Path) -> Agent {
    let mut child = Command::new(bin)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("NODE_NAME")
        .env_remove("POD_NAMESPACE")
        .env_remove("POD_NAME")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn agent");
    let stderr = child.stderr.take().expect("stderr");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(mut l) = sink.lock() {
                l.push(line);
            }
        }
    });
    Agent { child, lines }
}

fn wait_for_probes(addr: SocketAddr, n: f64, limit: Duration) -> f64 {
    let start = Instant::now();
    loop {
        let probes = http_get(addr, "/metrics")
            .map(|m| metric_sum(&m, "mshv_node_agent_probes_total"))
            .unwrap_or(0.0);
        if probes >= n || start.elapsed() > limit {
            return probes;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() {
    // `cargo bench` passes "--bench"; nothing else is taken from the command line.
    let probes = env_num("BENCH_PROBES", 10_000);
    let cycles = env_num("BENCH_CYCLES", 1_000);
    let write_secs = env_num("BENCH_WRITE_SECS", 10);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!("# mshv-node-agent bench");
    println!();
    println!("host: {cores} cores, kernel {}", kernel.trim());
    println!(
        "binary: {BIN} ({:.2} MiB)",
        std::fs::metadata(BIN)
            .map(|m| m.len() as f64 / 1048576.0)
            .unwrap_or(0.0)
    );
    println!();
    println!("| measurement | result | target |");
    println!("|---|---|---|");

    // 1a. Full ladder: CPUID says L1VH (fake), files are real, open/ioctls are fake; the
    //     fingerprint is re-run on every probe (max age 0), as in the worst case.
    let root = FakeRoot::new().with_driver(58);
    let mut prober = Prober::new(
        SwitchSys::l1vh(),
        ProbeOptions {
            host_root: root.path().to_path_buf(),
            self_query: true,
            fingerprint_max_age: Duration::ZERO,
        },
    );
    let (s, state) = time_probes(&mut prober, probes);
    println!(
        "| probe, full ladder on a fake host root ({probes} probes, final state `{state}`; fake CPUID/ioctls, real file I/O) | median {}, p99 {}, max {}, mean {} | ≤ 1 ms |",
        us(s.median),
        us(s.p99),
        us(s.max),
        us(s.mean)
    );

    // 1b. The real seam (HostSys: real CPUID, stat, reads) on a fake root with a real char
    //     device when root. On a non-Hyper-V host CPUID decides, so open/ioctl are skipped.
    let root = FakeRoot::new().with_driver(58);
    if root.mknod_char(10, 58).is_none() {
        root.write("dev/mshv", "");
    }
    let mut prober = Prober::new(
        HostSys,
        ProbeOptions {
            host_root: root.path().to_path_buf(),
            ..ProbeOptions::default()
        },
    );
    let (s, state) = time_probes(&mut prober, probes);
    println!(
        "| probe, real seam (HostSys) on a fake host root ({probes} probes, state `{state}` on this host) | median {}, p99 {}, max {}, mean {} | ≤ 1 ms |",
        us(s.median),
        us(s.p99),
        us(s.max),
        us(s.mean)
    );

    // 1c. The binary as a person runs it (process start included).
    let runs = 100;
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let out = Command::new(BIN)
            .args(["probe", "--json", "--host-root"])
            .arg(root.path())
            .output()
            .expect("probe");
        samples.push(t.elapsed());
        std::hint::black_box(out);
    }
    let s = stats(samples);
    println!(
        "| `mshv-node-agent probe --json` as a process ({runs} runs, exec included) | median {}, p99 {} | - |",
        us(s.median),
        us(s.p99)
    );

    // 2. RSS of `run` against the fake API server after N probe cycles.
    let tmp = tempfile::tempdir().expect("tmp");
    let api = FakeApi::start("bench-node");
    let kubeconfig = api.write_kubeconfig(tmp.path());
    let host_root = root.path().to_str().expect("utf8 path").to_string();
    let agent = spawn_agent(
        &[
            "run",
            "--node-name",
            "bench-node",
            "--interval",
            "10ms",
            "--lease-renew-interval",
            "100ms",
            "--lease-duration",
            "400ms",
            "--metrics-addr",
            "127.0.0.1:0",
            "--host-root",
            &host_root,
        ],
        &kubeconfig,
    );
    let start = Instant::now();
    let addr = loop {
        if let Some(a) = agent.metrics_addr() {
            break a;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "agent did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let pid = agent.child.id();
    let early = wait_for_probes(addr, 100.0, Duration::from_secs(60));
    let rss_early = status_kib(pid, "VmRSS:");
    let done = wait_for_probes(addr, cycles as f64, Duration::from_secs(600));
    let rss = status_kib(pid, "VmRSS:");
    let hwm = status_kib(pid, "VmHWM:");
    let writes = api.apply_count();
    println!(
        "| `run` RSS against the fake API (interval 10ms, Lease renewed every 100ms) | VmRSS {} after {early:.0} cycles, {} after {done:.0} cycles; peak VmHWM {}; {writes} Node applies | ≤ 16 MiB |",
        mib(rss_early),
        mib(rss),
        mib(hwm)
    );
    drop(agent);
    drop(api);

    // 3. API writes when nothing changes, time-compressed 3000x: the defaults (probe 60s,
    //    Lease renewed every 60s and held 240s) become 20ms / 20ms / 80ms.
    let compressed = [
        "--interval",
        "20ms",
        "--lease-renew-interval",
        "20ms",
        "--lease-duration",
        "80ms",
    ];
    let idle = idle_writes(BIN, &compressed, &host_root, tmp.path(), write_secs);
    println!(
        "| Node writes with nothing changing (interval 20ms = 60s / 3000, {:.1} s window after the first write) | {} Node writes = {:.1} per hour per idle node at the defaults | 0 |",
        idle.window.as_secs_f64(),
        idle.node_writes,
        idle.per_hour(idle.node_writes)
    );
    println!(
        "| Lease renewals with nothing changing (--lease-renew-interval 20ms = 60s / 3000, same window) | {} renewals = {:.1} per hour per node at the defaults | 60 (one a minute) |",
        idle.lease_writes,
        idle.per_hour(idle.lease_writes)
    );
    let mut violations = idle.violations;
    if let Ok(baseline) = std::env::var("BENCH_BASELINE_BIN") {
        // An agent from before the Lease: its defaults were interval 60s, heartbeat 5m.
        let old = ["--interval", "20ms", "--heartbeat", "100ms"];
        let before = idle_writes(&baseline, &old, &host_root, tmp.path(), write_secs);
        println!(
            "| before: Node writes with nothing changing, baseline binary `{baseline}` (interval:heartbeat 20ms:100ms = 60s:5m / 3000, {:.1} s window) | {} Node writes = {:.1} per hour per idle node; {} Lease writes | - |",
            before.window.as_secs_f64(),
            before.node_writes,
            before.per_hour(before.node_writes),
            before.lease_writes
        );
        violations.extend(before.violations);
    }
    if !violations.is_empty() {
        println!();
        println!("fake API violations: {violations:?}");
    }
}

/// What an agent wrote while nothing changed on its host.
struct IdleWrites {
    node_writes: usize,
    lease_writes: usize,
    window: Duration,
    violations: Vec<String>,
}

impl IdleWrites {
    /// Scaled back from the 3000x time compression to writes per hour.
    fn per_hour(&self, count: usize) -> f64 {
        let scale = 3000.0; // 60 s / 20 ms
        count as f64 / (self.window.as_secs_f64() * scale / 3600.0)
    }
}

/// Run `bin` against a fresh fake API server and count, over `secs` seconds from its first
/// Node write on, the further Node writes and the Lease writes (any outcome).
fn idle_writes(
    bin: &str,
    timing: &[&str],
    host_root: &str,
    tmp: &std::path::Path,
    secs: u64,
) -> IdleWrites {
    let api = FakeApi::start("bench-node");
    let kubeconfig = api.write_kubeconfig(tmp);
    let mut args = vec![
        "run",
        "--node-name",
        "bench-node",
        "--metrics-addr",
        "127.0.0.1:0",
        "--host-root",
        host_root,
        "--device-plugin=false",
    ];
    args.extend_from_slice(timing);
    let agent = spawn_agent_bin(bin, &args, &kubeconfig);
    let start = Instant::now();
    while api.node_write_count() == 0 && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let lease_patches = |api: &FakeApi| {
        api.lease_requests()
            .iter()
            .filter(|r| r.method == "PATCH")
            .count()
    };
    let t0 = Instant::now();
    let (node0, lease0) = (api.node_write_count(), lease_patches(&api));
    std::thread::sleep(Duration::from_secs(secs));
    let window = t0.elapsed();
    let (node1, lease1) = (api.node_write_count(), lease_patches(&api));
    drop(agent);
    IdleWrites {
        node_writes: node1 - node0,
        lease_writes: lease1 - lease0,
        window,
        violations: api.violations(),
    }
}
