//! The device plugin against a FAKE kubelet: a real tonic `Registration` server on a unix
//! socket in a temp dir, and the plugin's `DevicePlugin` service called over its real
//! socket the way kubelet calls it. Covers registration, ListAndWatch following the probe
//! both ways, Allocate, GetPreferredAllocation, kubelet restarts (directory wiped), a stale
//! socket of ours, kubelet absent at start, a refused registration, and stepping aside while
//! virt-handler's `kubevirt-mshv.sock` is live.
//!
//! Not kubelet: it only records `Register` calls (and can refuse them). Timeouts are
//! generous bounds, never speed assertions.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::fake_kubelet::start_kubelet;
use common::fake_sys::{FakeRoot, SwitchSys};
use mshv_node_agent::device_plugin::api::v1beta1::device_plugin_client::DevicePluginClient;
use mshv_node_agent::device_plugin::api::v1beta1::{
    AllocateRequest, ContainerAllocateRequest, ContainerPreferredAllocationRequest, DeviceSpec,
    Empty, ListAndWatchResponse, PreStartContainerRequest, PreferredAllocationRequest,
    RegisterRequest,
};
use mshv_node_agent::device_plugin::registration::connect_unix;
use mshv_node_agent::device_plugin::{self, PluginConfig, lifecycle};
use mshv_node_agent::health::AgentState;
use mshv_node_agent::metrics::Metrics;
use mshv_node_agent::probe::{ProbeOptions, Prober};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tonic::Streaming;

const BOUND: Duration = Duration::from_secs(20);

/// The agent side: the plugin lifecycle with short polls, and a prober whose verdict the
/// test flips (the same path the agent loop takes: `AgentState::record_probe`).
struct Agent {
    health: Arc<AgentState>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    sys: SwitchSys,
    prober: Prober<SwitchSys>,
    _root: FakeRoot,
}

fn config(dir: &Path) -> PluginConfig {
    let mut cfg = PluginConfig::new(
        dir.to_path_buf(),
        device_plugin::DEFAULT_RESOURCE.to_string(),
        device_plugin::DEFAULT_DEVICES,
    );
    cfg.poll = Duration::from_millis(50);
    cfg.virt_handler_recheck = Duration::from_millis(100);
    cfg.backoff_base = Duration::from_millis(50);
    cfg.backoff_cap = Duration::from_millis(400);
    cfg.register_timeout = Duration::from_secs(5);
    cfg
}

fn start_agent(dir: &Path) -> Agent {
    let health = Arc::new(AgentState::new(Metrics::new()));
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(lifecycle::run(config(dir), Arc::clone(&health), stop_rx));
    let root = FakeRoot::new().with_driver(58);
    let sys = SwitchSys::l1vh();
    sys.set_capable(false);
    let prober = Prober::new(
        sys.clone(),
        ProbeOptions {
            host_root: root.path().to_path_buf(),
            self_query: false,
            fingerprint_max_age: Duration::ZERO,
        },
    );
    Agent {
        health,
        stop,
        task,
        sys,
        prober,
        _root: root,
    }
}

impl Agent {
    fn probe_capable(&mut self, capable: bool) {
        self.sys.set_capable(capable);
        let report = self.prober.probe();
        assert_eq!(report.capable, capable, "{}", report.reason);
        self.health.record_probe(&report);
    }

    fn metrics(&self) -> String {
        self.health.metrics.encode().expect("encode")
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(BOUND, self.task)
            .await
            .expect("the plugin stops within the bound")
            .expect("the plugin task does not panic");
    }
}

fn socket(dir: &Path) -> PathBuf {
    dir.join("mshv-node-agent-mshv.sock")
}

async fn next_registration(rx: &mut mpsc::UnboundedReceiver<RegisterRequest>) -> RegisterRequest {
    tokio::time::timeout(BOUND, rx.recv())
        .await
        .expect("a registration within the bound")
        .expect("the fake kubelet is alive")
}

async fn client(dir: &Path) -> DevicePluginClient<tonic::transport::Channel> {
    let channel = connect_unix(&socket(dir), Duration::from_secs(5))
        .await
        .expect("dial the plugin socket");
    DevicePluginClient::new(channel)
}

async fn next_list(stream: &mut Streaming<ListAndWatchResponse>) -> ListAndWatchResponse {
    tokio::time::timeout(BOUND, stream.next())
        .await
        .expect("a ListAndWatch update within the bound")
        .expect("the stream is open")
        .expect("no gRPC error")
}

fn health_of(list: &ListAndWatchResponse) -> (usize, Vec<&str>) {
    let mut h: Vec<&str> = list.devices.iter().map(|d| d.health.as_str()).collect();
    h.dedup();
    (list.devices.len(), h)
}

async fn wait_until(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..2000 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

fn plugin_state(metrics: &str) -> Option<String> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix("mshv_node_agent_device_plugin_state{state=\"")?;
        let (state, value) = rest.split_once("\"} ")?;
        (value.trim() == "1").then(|| state.to_string())
    })
}

#[tokio::test]
async fn registers_and_answers_kubelet_calls_with_health_following_the_probe() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (kubelet, mut regs) = start_kubelet(dir.path(), false);
    let mut agent = start_agent(dir.path());

    let req = next_registration(&mut regs).await;
    assert_eq!(req.version, "v1beta1");
    assert_eq!(req.endpoint, "mshv-node-agent-mshv.sock");
    assert_eq!(req.resource_name, "devices.kubevirt.io/mshv");
    let opts = req.options.expect("options");
    assert!(!opts.pre_start_required && opts.get_preferred_allocation_available);
    assert!(wait_until(|| plugin_state(&agent.metrics()).as_deref() == Some("registered")).await);

    let mut c = client(dir.path()).await;
    let o = c
        .get_device_plugin_options(Empty {})
        .await
        .expect("options")
        .into_inner();
    assert!(o.get_preferred_allocation_available && !o.pre_start_required);

    // No probe yet: all 1000 devices Unhealthy.
    let mut stream = c
        .list_and_watch(Empty {})
        .await
        .expect("ListAndWatch")
        .into_inner();
    let first = next_list(&mut stream).await;
    assert_eq!(health_of(&first), (1000, vec!["Unhealthy"]));
    assert_eq!(first.devices[0].id, "mshv0");
    assert_eq!(first.devices[999].id, "mshv999");

    // Flapping: capable → not → capable, each seen on the open stream.
    agent.probe_capable(true);
    assert_eq!(
        health_of(&next_list(&mut stream).await),
        (1000, vec!["Healthy"])
    );
    assert!(
        wait_until(|| agent
            .metrics()
            .contains("mshv_node_agent_device_plugin_healthy_devices 1000"))
        .await
    );
    agent.probe_capable(false);
    assert_eq!(
        health_of(&next_list(&mut stream).await),
        (1000, vec!["Unhealthy"])
    );
    agent.probe_capable(true);
    assert_eq!(
        health_of(&next_list(&mut stream).await),
        (1000, vec!["Healthy"])
    );
    // An unchanged verdict sends nothing new: a second stream sees the current state once.
    agent.probe_capable(true);
    let mut second = c
        .list_and_watch(Empty {})
        .await
        .expect("ListAndWatch")
        .into_inner();
    assert_eq!(
        health_of(&next_list(&mut second).await),
        (1000, vec!["Healthy"])
    );

    let alloc = c
        .allocate(AllocateRequest {
            container_requests: vec![ContainerAllocateRequest {
                devices_ids: vec!["mshv7".into()],
            }],
        })
        .await
        .expect("Allocate")
        .into_inner();
    assert_eq!(alloc.container_responses.len(), 1);
    assert_eq!(
        alloc.container_responses[0].devices,
        [DeviceSpec {
            container_path: "/dev/mshv".into(),
            host_path: "/dev/mshv".into(),
            permissions: "rwm".into(),
        }]
    );
    assert!(alloc.container_responses[0].mounts.is_empty());
    assert!(alloc.container_responses[0].envs.is_empty());
    let refused = c
        .allocate(AllocateRequest {
            container_requests: vec![ContainerAllocateRequest {
                devices_ids: vec!["kvm0".into()],
            }],
        })
        .await
        .expect_err("unknown IDs are refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    let pref = c
        .get_preferred_allocation(PreferredAllocationRequest {
            container_requests: vec![ContainerPreferredAllocationRequest {
                available_device_i_ds: vec!["mshv5".into(), "mshv6".into()],
                must_include_device_i_ds: vec![],
                allocation_size: 1,
            }],
        })
        .await
        .expect("GetPreferredAllocation")
        .into_inner();
    assert_eq!(pref.container_responses[0].device_i_ds, ["mshv5"]);
    c.pre_start_container(PreStartContainerRequest {
        devices_ids: vec!["mshv7".into()],
    })
    .await
    .expect("PreStartContainer");

    let m = agent.metrics();
    assert!(
        m.contains("mshv_node_agent_device_plugin_allocations_total 1"),
        "{m}"
    );
    assert!(
        m.contains("mshv_node_agent_device_plugin_registrations_total{result=\"ok\"} 1"),
        "{m}"
    );
    let status = agent.health.status();
    assert_eq!(status.device_plugin.state, "registered");
    assert_eq!(status.device_plugin.healthy_devices, 1000);

    // Stopping ends the open stream with an empty list, and removes our socket.
    agent.stop().await;
    let last = next_list(&mut stream).await;
    assert!(last.devices.is_empty());
    assert!(!socket(dir.path()).exists());
    kubelet.shutdown().await;
}

#[tokio::test]
async fn kubelet_restart_wipes_the_directory_and_the_plugin_registers_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (kubelet, mut regs) = start_kubelet(dir.path(), false);
    let agent = start_agent(dir.path());
    next_registration(&mut regs).await;

    // kubelet restarts: it goes away, wipes every socket in its directory, comes back.
    kubelet.shutdown().await;
    for entry in std::fs::read_dir(dir.path()).expect("read dir") {
        std::fs::remove_file(entry.expect("entry").path()).expect("wipe");
    }
    let (kubelet, mut regs) = start_kubelet(dir.path(), false);
    let again = next_registration(&mut regs).await;
    assert_eq!(again.endpoint, "mshv-node-agent-mshv.sock");
    assert!(wait_until(|| socket(dir.path()).exists()).await);

    // The new socket serves.
    let mut c = client(dir.path()).await;
    c.get_device_plugin_options(Empty {})
        .await
        .expect("options after re-registration");
    let m = agent.metrics();
    assert!(
        m.contains("mshv_node_agent_device_plugin_registrations_total{result=\"ok\"} 2"),
        "{m}"
    );
    agent.stop().await;
    kubelet.shutdown().await;
}

#[tokio::test]
async fn a_stale_socket_from_an_earlier_run_is_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    // An earlier agent died without cleaning up: its socket file stays, nobody listens.
    drop(std::os::unix::net::UnixListener::bind(socket(dir.path())).expect("stale socket"));
    assert!(socket(dir.path()).exists());
    let (kubelet, mut regs) = start_kubelet(dir.path(), false);
    let agent = start_agent(dir.path());
    next_registration(&mut regs).await;
    let mut c = client(dir.path()).await;
    c.get_device_plugin_options(Empty {})
        .await
        .expect("the new socket serves");
    agent.stop().await;
    kubelet.shutdown().await;
}

#[tokio::test]
async fn kubelet_absent_at_start_then_registers_when_it_appears() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = start_agent(dir.path());
    assert!(
        wait_until(|| plugin_state(&agent.metrics()).as_deref() == Some("waiting-for-kubelet"))
            .await
    );
    assert_eq!(
        agent.health.status().device_plugin.state,
        "waiting-for-kubelet"
    );

    // A kubelet.sock nobody listens on (kubelet crashed): connection errors, backoff, no crash.
    drop(
        std::os::unix::net::UnixListener::bind(dir.path().join("kubelet.sock"))
            .expect("dead kubelet.sock"),
    );
    assert!(
        wait_until(|| agent
            .metrics()
            .contains("mshv_node_agent_device_plugin_registrations_total{result=\"error\"}"))
        .await
    );
    assert!(wait_until(|| plugin_state(&agent.metrics()).as_deref() == Some("error")).await);
    assert!(agent.health.status().last_error.is_some());

    let (kubelet, mut regs) = start_kubelet(dir.path(), false);
    next_registration(&mut regs).await;
    assert!(wait_until(|| plugin_state(&agent.metrics()).as_deref() == Some("registered")).await);
    agent.stop().await;
    kubelet.shutdown().await;
}

#[tokio::test]
async fn a_refused_registration_is_retried_not_fatal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (kubelet, mut regs) = start_kubelet(dir.path(), true);
    let agent = start_agent(dir.path());
    next_registration(&mut regs).await;
    next_registration(&mut regs).await; // retried with backoff
    assert!(wait_until(|| plugin_state(&agent.metrics()).as_deref() == Some("error")).await);
    kubelet.shutdown().await;
    let (kubelet, mut regs) = start_kubelet(dir.path(), false);
    next_registration(&mut regs).await;
    assert!(wait_until(|| plugin_state(&agent.metrics()).as_deref() == Some("registered")).await);
    agent.stop().await;
    kubelet.shutdown().await;
}

#[tokio::test]
async fn defers_while_virt_handler_serves_mshv_and_registers_when_it_goes() {
    let dir = tempfile::tempdir().expect("tempdir");
    // virt-handler's socket for mshv, live (kubevirt-<device>.sock).
    let vh_path = dir.path().join("kubevirt-mshv.sock");
    let virt_handler = UnixListener::bind(&vh_path).expect("virt-handler socket");
    let (kubelet, mut regs) = start_kubelet(dir.path(), false);
    let agent = start_agent(dir.path());

    assert!(
        wait_until(|| plugin_state(&agent.metrics()).as_deref()
            == Some("deferred-to-virt-handler"))
        .await
    );
    let status = agent.health.status();
    assert_eq!(status.device_plugin.state, "deferred-to-virt-handler");
    assert!(status.device_plugin.detail.contains("kubevirt-mshv.sock"));
    // Several poll periods later: still no registration, no socket of ours.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(regs.try_recv().is_err(), "registered despite virt-handler");
    assert!(!socket(dir.path()).exists());

    // virt-handler goes away (its cleanup removes the socket): the agent registers.
    drop(virt_handler);
    std::fs::remove_file(&vh_path).expect("remove virt-handler socket");
    next_registration(&mut regs).await;
    assert!(wait_until(|| plugin_state(&agent.metrics()).as_deref() == Some("registered")).await);

    // virt-handler comes back while we are registered: we step aside again.
    let virt_handler = UnixListener::bind(&vh_path).expect("virt-handler socket again");
    assert!(
        wait_until(|| plugin_state(&agent.metrics()).as_deref()
            == Some("deferred-to-virt-handler"))
        .await
    );
    assert!(wait_until(|| !socket(dir.path()).exists()).await);
    drop(virt_handler);

    // A leftover kubevirt-mshv.sock nobody listens on does not block us.
    next_registration(&mut regs).await;
    agent.stop().await;
    kubelet.shutdown().await;
}

/// What a test in another crate does (docs/node-agent.md, "Calling the plugin from another
/// crate"): serve the service on a socket of its own, no kubelet, and call `Allocate`.
#[tokio::test]
async fn allocate_over_a_socket_without_kubelet() {
    let mut plugin = common::plugin_socket::serve_plugin(device_plugin::DEFAULT_RESOURCE).await;
    let c = &mut plugin.client;
    let specs = c
        .allocate(AllocateRequest {
            container_requests: vec![ContainerAllocateRequest {
                devices_ids: vec!["mshv0".into()],
            }],
        })
        .await
        .expect("Allocate")
        .into_inner()
        .container_responses[0]
        .devices
        .clone();
    assert_eq!(
        specs,
        [DeviceSpec {
            container_path: "/dev/mshv".into(),
            host_path: "/dev/mshv".into(),
            permissions: "rwm".into(),
        }]
    );
}
