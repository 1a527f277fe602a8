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
//!   default interval/heartbeat (measured, not asserted).
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
    let mut child = Command::new(BIN)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("NODE_NAME")
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
            "--heartbeat",
            "100ms",
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
        "| `run` RSS against the fake API (interval 10ms, heartbeat 100ms) | VmRSS {} after {early:.0} cycles, {} after {done:.0} cycles; peak VmHWM {}; {writes} applies | ≤ 16 MiB |",
        mib(rss_early),
        mib(rss),
        mib(hwm)
    );
    drop(agent);
    drop(api);

    // 3. API writes when nothing changes, at the default 1:5 interval:heartbeat ratio,
    //    time-compressed 3000x (20 ms : 100 ms instead of 60 s : 5 min).
    let api = FakeApi::start("bench-node");
    let kubeconfig = api.write_kubeconfig(tmp.path());
    let agent = spawn_agent(
        &[
            "run",
            "--node-name",
            "bench-node",
            "--interval",
            "20ms",
            "--heartbeat",
            "100ms",
            "--metrics-addr",
            "127.0.0.1:0",
            "--host-root",
            &host_root,
        ],
        &kubeconfig,
    );
    let start = Instant::now();
    while api.apply_count() == 0 && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(5));
    }
    // Count from the first write on, over a fixed window.
    let t0 = Instant::now();
    let before = api.apply_count();
    std::thread::sleep(Duration::from_secs(write_secs));
    let window = t0.elapsed();
    let after = api.apply_count();
    drop(agent);
    let counted = after - before;
    let scale = 3000.0; // 60 s / 20 ms
    let default_hours = window.as_secs_f64() * scale / 3600.0;
    let per_hour = counted as f64 / default_hours;
    println!(
        "| API writes with nothing changing (interval:heartbeat = 20ms:100ms, {:.1} s window) | {counted} applies = {:.1} per heartbeat period; scaled to the defaults (60s:5m) = {per_hour:.1} writes/hour | few per hour |",
        window.as_secs_f64(),
        counted as f64 / (window.as_secs_f64() / 0.1)
    );
    let violations = api.violations();
    if !violations.is_empty() {
        println!();
        println!("fake API violations: {violations:?}");
    }
}
