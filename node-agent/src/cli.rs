//! Command line: `probe`, `run`, `cleanup`, `bench`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use tracing::{Instrument, error, info, info_span, warn};
use tracing_subscriber::filter::LevelFilter;

use crate::agent::{self, RunConfig};
use crate::backoff::Backoff;
use crate::device_access::{self, AccessPolicy};
use crate::device_plugin::{self, PluginConfig};
use crate::health::{self, AgentState};
use crate::labels::LabelPrefix;
use crate::metrics::Metrics;
use crate::probe::sys::HostSys;
use crate::probe::{ProbeOptions, Prober, State, render};
use crate::publish::Publisher;
use crate::publish::api::ApiPublisher;
use crate::publish::lease::{self, LeaseConfig, LeaseRenewer};
use crate::publish::nfd::{self, NfdPublisher};

/// A positive duration written like `60s`, `5m`, `1h30m` or ISO 8601 (`PT5M`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let d: jiff::SignedDuration = s.parse().map_err(|e| format!("{e}"))?;
        let d = Duration::try_from(d).map_err(|_| "duration must not be negative".to_string())?;
        if d.is_zero() {
            return Err("duration must be greater than zero".into());
        }
        Ok(Self(d))
    }
}

/// An interval that `0` switches off (`--bench-interval 0`): `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval(pub Option<Duration>);

impl FromStr for Interval {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim() == "0" {
            return Ok(Self(None));
        }
        s.parse::<HumanDuration>().map(|d| Self(Some(d.0)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PublishKind {
    /// Server-side apply on the Node object.
    Api,
    /// A Node Feature Discovery features.d file (nfd-worker makes the labels).
    Nfd,
}

#[derive(Debug, Parser)]
#[command(
    name = "mshv-node-agent",
    version,
    about = "Probe /dev/mshv and label this Kubernetes node"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at start-up: the size difference of the variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Probe once and print the result. Exit 0 capable, 1 not capable, 2 probe error.
    Probe(ProbeArgs),
    /// Probe periodically and publish labels (the DaemonSet mode).
    // Boxed: its many flags would make every `Command` as large as `run`'s (clippy's
    // large_enum_variant).
    Run(Box<RunArgs>),
    /// Remove the agent's labels and annotation (or its NFD file): for uninstall.
    Cleanup(CleanupArgs),
    /// Time KVM and mshv side by side with a tiny guest. Exit 0 ran, 1 nothing could run,
    /// 2 a bench failed, 3 another bench is running.
    Bench(crate::bench::cli::BenchArgs),
}

#[derive(Debug, Args)]
pub struct HostArgs {
    /// Prefix of every host path (/dev, /proc, /sys), e.g. /host in a container.
    #[arg(long, env = "HOST_ROOT", default_value = "/")]
    pub host_root: PathBuf,
    /// Skip the optional read-only self partition-property query (MSHV_ROOT_HVCALL).
    #[arg(long)]
    pub no_self_query: bool,
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also run a tiny guest on /dev/mshv (guest-run verification). A capable node whose
    /// guest fails exits 1.
    #[arg(long)]
    pub run_guest: bool,
    #[command(flatten)]
    pub host: HostArgs,
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Prefix of the labels and of the annotation.
    #[arg(long, default_value_t = LabelPrefix::default())]
    pub label_prefix: LabelPrefix,
    /// Where the labels go.
    #[arg(long, value_enum, default_value_t = PublishKind::Api)]
    pub publish: PublishKind,
    /// nfd-worker's features.d directory (with --publish nfd).
    #[arg(long, default_value = nfd::DEFAULT_DIR)]
    pub nfd_dir: PathBuf,
    /// Give up on one API request after this long (it is retried with backoff).
    #[arg(long, default_value = "10s")]
    pub api_timeout: HumanDuration,
}

/// The kubelet device plugin for /dev/mshv, and the device node's permissions.
#[derive(Debug, Args)]
pub struct DeviceArgs {
    /// Serve /dev/mshv to kubelet as a device plugin (`--device-plugin=false`: labels only,
    /// e.g. for NFD-only clusters or where virt-handler serves mshv itself).
    #[arg(long, default_value_t = true, action = ArgAction::Set, value_name = "BOOL")]
    pub device_plugin: bool,
    /// kubelet's device plugin directory (kubelet.sock and the plugin sockets).
    #[arg(long, default_value = device_plugin::DEFAULT_DIR)]
    pub device_plugin_dir: PathBuf,
    /// Extended resource the plugin serves (virt-handler's name for mshv).
    #[arg(long, default_value = device_plugin::DEFAULT_RESOURCE, value_parser = parse_resource)]
    pub device_resource: String,
    /// Number of shared device IDs advertised (virt-handler's --max-devices default).
    #[arg(long, default_value_t = device_plugin::DEFAULT_DEVICES, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub device_count: u32,
    /// Permission bits to keep on the host's /dev/mshv so KubeVirt's qemu (uid/gid 107) can
    /// open it (octal), or `keep` to leave the mode alone.
    #[arg(long, default_value = "0666")]
    pub device_mode: device_access::DeviceMode,
    /// Also make this group own the host's /dev/mshv (e.g. 107, with --device-mode 0660).
    #[arg(long, value_name = "GID")]
    pub device_group: Option<u32>,
}

impl DeviceArgs {
    pub fn access_policy(&self) -> Option<AccessPolicy> {
        let policy = AccessPolicy {
            mode: self.device_mode.0,
            group: self.device_group,
        };
        (policy.mode.is_some() || policy.group.is_some()).then_some(policy)
    }
}

/// An extended resource name as the API server checks it (the same check as the policy's
/// `deviceResource` setting).
fn parse_resource(s: &str) -> Result<String, String> {
    vocab::names::check_extended_resource(s).map(|()| s.to_string())
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// This node's name (the DaemonSet passes spec.nodeName through the downward API).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// Time between probes.
    #[arg(long, default_value = "60s")]
    pub interval: HumanDuration,
    /// Deprecated and ignored (accepted so older manifests keep working; a warning is
    /// logged): the Node is written only when the probe result changes, liveness is in
    /// the Lease (--lease-renew-interval) and the NFD file has --nfd-refresh.
    #[arg(long, hide = true, value_name = "DURATION")]
    pub heartbeat: Option<HumanDuration>,
    /// With --publish nfd: rewrite the unchanged features file this often (its
    /// expiry-time is 3 refresh periods ahead; a local file, not an API write).
    #[arg(long, default_value = "5m")]
    pub nfd_refresh: HumanDuration,
    /// Reuse the fingerprint ioctl result for the same device node this long (some
    /// kernels log every MSHV_CREATE_PARTITION call).
    #[arg(long, default_value = "1h")]
    pub fingerprint_interval: HumanDuration,
    /// Longest wait between retries of a failed publication or device plugin registration.
    #[arg(long, default_value = "2m")]
    pub max_backoff: HumanDuration,
    /// Address of /metrics, /healthz, /readyz and /status.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Log level of the agent (error, warn, info, debug, trace).
    #[arg(long, default_value = "info", env = "LOG_LEVEL")]
    pub log_level: LevelFilter,
    /// Run a tiny guest on /dev/mshv at start, when the device node changes, and at most
    /// this often (the guest-verified label); 0 = off.
    #[arg(long, default_value = "6h")]
    pub guest_verify_interval: Interval,
    /// Run the hypervisor bench at start and this often (the bench metrics); 0 = off.
    #[arg(long, default_value = "24h")]
    pub bench_interval: Interval,
    #[command(flatten)]
    pub publish: PublishArgs,
    #[command(flatten)]
    pub host: HostArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
    #[command(flatten)]
    pub lease: LeaseArgs,
}

/// The agent's liveness Lease (coordination.k8s.io/v1, one per node; `publish::lease`).
#[derive(Debug, Args)]
pub struct LeaseArgs {
    /// Renew a Lease `mshv-node-agent-<node>` in the agent's namespace (with --publish
    /// api; `--lease=false`: none, e.g. without the Role for leases).
    #[arg(long, default_value_t = true, action = ArgAction::Set, value_name = "BOOL")]
    pub lease: bool,
    /// Namespace of the Lease (the DaemonSet passes metadata.namespace; default: the
    /// service account's namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// holderIdentity of the Lease (the DaemonSet passes metadata.name; default: the
    /// node name).
    #[arg(long, env = "POD_NAME")]
    pub lease_holder: Option<String>,
    /// Time between Lease renewals.
    #[arg(long, default_value = "60s")]
    pub lease_renew_interval: HumanDuration,
    /// leaseDurationSeconds: how long a renewal counts (must exceed the renew interval;
    /// whole seconds).
    #[arg(long, default_value = "240s")]
    pub lease_duration: HumanDuration,
}

#[derive(Debug, Args)]
pub struct CleanupArgs {
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    #[arg(long, default_value = "info", env = "LOG_LEVEL")]
    pub log_level: LevelFilter,
    #[command(flatten)]
    pub publish: PublishArgs,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Probe(args) => probe(&args),
        Command::Run(args) => {
            crate::logging::init_json(args.log_level);
            let span = info_span!("agent", node = %args.node_name);
            block_on(logged(run(*args)).instrument(span))
        }
        Command::Cleanup(args) => {
            crate::logging::init_json(args.log_level);
            let span = info_span!("agent", node = %args.node_name);
            block_on(logged(cleanup(args)).instrument(span))
        }
        Command::Bench(args) => crate::bench::cli::bench(&args),
    }
}

/// Log a fatal error inside the caller's span, so even the last line names the node.
async fn logged(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    let result = fut.await;
    if let Err(e) = &result {
        error!(error = format!("{e:#}"), "exiting");
    }
    result
}

fn block_on(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mshv-node-agent: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // One thread is plenty: the agent sleeps almost all the time.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn probe_options(host: &HostArgs, fingerprint_max_age: Duration) -> ProbeOptions {
    ProbeOptions {
        host_root: host.host_root.clone(),
        self_query: !host.no_self_query,
        fingerprint_max_age,
    }
}

/// `probe --json`: the report plus the read-only device access view.
#[derive(serde::Serialize)]
struct ProbeOutput<'a> {
    #[serde(flatten)]
    report: &'a crate::probe::ProbeReport,
    device_access: device_access::AccessReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    guest_verification: Option<crate::bench::cli::GuestOutput>,
    status_hint: String,
}

fn probe(args: &ProbeArgs) -> ExitCode {
    let mut prober = Prober::new(HostSys, probe_options(&args.host, Duration::ZERO));
    let report = prober.probe();
    let access = device_access::inspect(
        &HostSys,
        &args.host.host_root.join("dev/mshv"),
        &AccessPolicy::default(),
    );
    let status_hint = "curl http://<metrics-addr>/status on a running agent (run --metrics-addr, default 0.0.0.0:8080)".to_string();
    let guest = args
        .run_guest
        .then(|| crate::bench::cli::run_guest(&args.host.host_root));
    let guest_failed = guest.as_ref().is_some_and(|g| g.verified == Some(false));
    let out = if args.json {
        let output = ProbeOutput {
            report: &report,
            device_access: access,
            guest_verification: guest,
            status_hint,
        };
        match serde_json::to_string_pretty(&output) {
            Ok(s) => s + "\n",
            Err(e) => {
                eprintln!("mshv-node-agent: cannot encode the report: {e}");
                return ExitCode::from(State::Error.exit_code());
            }
        }
    } else {
        let guest_line = guest
            .map(|g| format!("guest run: {}\n", g.line()))
            .unwrap_or_default();
        format!(
            "{}device access: {} (run --device-mode, default 0666)\n{guest_line}status: {status_hint}\n",
            render::human(&report),
            access.detail
        )
    };
    print!("{out}");
    // `capable` keeps its meaning; a capable node whose guest did not run is not capable
    // for this command's exit code, which is what `--run-guest` asks.
    let code = match report.state.exit_code() {
        0 if guest_failed => 1,
        c => c,
    };
    ExitCode::from(code)
}

async fn kube_client(timeout: Duration) -> anyhow::Result<kube::Client> {
    let config = kube::Config::infer()
        .await
        .context("finding Kubernetes credentials (in-cluster service account or KUBECONFIG)")?;
    crate::publish::api::client(config, timeout).context("building the Kubernetes client")
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let health = Arc::new(AgentState::new(Metrics::new()));
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("binding the metrics server to {}", args.metrics_addr))?;
    let bound = listener
        .local_addr()
        .context("reading the metrics address")?;
    info!(addr = %bound, "serving /metrics, /healthz, /readyz and /status");

    // One stop signal for every task: the HTTP server, the device plugin and the loop.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut server_stop = stop_rx.clone();
    let server = tokio::spawn(
        health::serve(listener, Arc::clone(&health), async move {
            let _ = server_stop.wait_for(|s| *s).await;
        })
        .in_current_span(),
    );
    let plugin = if args.device.device_plugin {
        let mut cfg = PluginConfig::new(
            args.device.device_plugin_dir.clone(),
            args.device.device_resource.clone(),
            args.device.device_count,
        );
        cfg.backoff_cap = args.max_backoff.0;
        Some(tokio::spawn(
            device_plugin::lifecycle::run(cfg, Arc::clone(&health), stop_rx.clone())
                .in_current_span(),
        ))
    } else {
        info!("device plugin switched off (--device-plugin=false)");
        device_plugin::lifecycle::report_disabled(&health);
        None
    };

    let interval = args.interval.0;
    if let Some(hb) = args.heartbeat {
        warn!(
            heartbeat = ?hb.0,
            "--heartbeat is deprecated and ignored: the Node is written only when the probe result changes; liveness is the Lease (--lease-renew-interval), the NFD file has --nfd-refresh"
        );
    }
    let backoff_base = Duration::from_millis(500).min(interval);
    let mut lease_task = None;
    let publisher = match args.publish.publish {
        PublishKind::Api => {
            let client = kube_client(args.publish.api_timeout.0).await?;
            if let Some(renewer) =
                lease_renewer(&args, &client, backoff_base).context("configuring the Lease")?
            {
                lease_task = Some(spawn_lease(renewer, &health, stop_rx.clone()));
            }
            Publisher::Api(Box::new(ApiPublisher::new(
                client,
                args.node_name.clone(),
                args.publish.api_timeout.0,
            )))
        }
        // Three refresh periods: a live agent rewrites long before expiry, a dead one's
        // labels disappear within ~15 minutes at the defaults.
        PublishKind::Nfd => {
            info!("no Lease with --publish nfd: the features file's expiry is the liveness");
            Publisher::Nfd(NfdPublisher::new(
                args.publish.nfd_dir.clone(),
                args.nfd_refresh
                    .0
                    .saturating_mul(3)
                    .max(interval.saturating_mul(3)),
            ))
        }
    };
    let cfg = RunConfig {
        interval,
        refresh: publisher.refresh(),
        prefix: args.publish.label_prefix.clone(),
        backoff_base,
        backoff_cap: args.max_backoff.0,
        device_access: args.device.access_policy(),
    };
    let schedule = crate::bench::cli::schedule_config(
        &args.host.host_root,
        args.guest_verify_interval.0,
        args.bench_interval.0,
        interval,
    );
    let scheduled = tokio::spawn(
        crate::bench::schedule::run(schedule, Arc::clone(&health), stop_rx.clone())
            .in_current_span(),
    );
    let mut prober = Prober::new(
        HostSys,
        probe_options(&args.host, args.fingerprint_interval.0),
    );
    agent::run(&mut prober, &publisher, &cfg, &health, shutdown_signal()).await;

    let _ = stop_tx.send(true);
    if let Some(lease) = lease_task
        && let Err(e) = lease.await
    {
        warn!(error = %e, "Lease task failed");
    }
    if let Err(e) = scheduled.await {
        warn!(error = %e, "guest verification / bench task failed");
    }
    if let Some(plugin) = plugin
        && let Err(e) = plugin.await
    {
        warn!(error = %e, "device plugin task failed");
    }
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "metrics server stopped with an error"),
        Err(e) => warn!(error = %e, "metrics server task failed"),
    }
    Ok(())
}

/// The Lease renewer `run` starts (`None`: `--lease=false`). Bad Lease flags are an error
/// at start; API errors later never are.
fn lease_renewer(
    args: &RunArgs,
    client: &kube::Client,
    backoff_base: Duration,
) -> anyhow::Result<Option<LeaseRenewer>> {
    let l = &args.lease;
    if !l.lease {
        info!("Lease switched off (--lease=false)");
        return Ok(None);
    }
    let renew_interval = l.lease_renew_interval.0;
    let duration = l.lease_duration.0;
    if duration <= renew_interval {
        bail!(
            "--lease-duration ({duration:?}) must be longer than --lease-renew-interval ({renew_interval:?})"
        );
    }
    let namespace = l
        .lease_namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| client.default_namespace().to_string());
    vocab::names::check_object_name(&namespace)
        .map_err(|e| anyhow::anyhow!("--lease-namespace: {e}"))?;
    let cfg = LeaseConfig {
        namespace,
        name: lease::lease_name(&args.node_name),
        holder: l
            .lease_holder
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| args.node_name.clone()),
        node: args.node_name.clone(),
        duration,
        renew_interval,
        backoff_base,
        backoff_cap: args.max_backoff.0,
    };
    Ok(Some(LeaseRenewer::new(
        client.clone(),
        cfg,
        args.publish.api_timeout.0,
    )))
}

fn spawn_lease(
    mut renewer: LeaseRenewer,
    health: &Arc<AgentState>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let health = Arc::clone(health);
    tokio::spawn(
        async move {
            lease::run(&mut renewer, &health, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
        }
        .in_current_span(),
    )
}

/// SIGTERM (kubelet) or SIGINT (a person). If the handlers cannot be installed the agent
/// still runs; it is then stopped by SIGKILL after the grace period, which is harmless.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => info!("SIGTERM received"),
                _ = int.recv() => info!("SIGINT received"),
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            warn!(error = %e, "cannot install signal handlers");
            std::future::pending::<()>().await;
        }
    }
}

async fn cleanup(args: CleanupArgs) -> anyhow::Result<()> {
    match args.publish.publish {
        PublishKind::Nfd => {
            let publisher = NfdPublisher::new(args.publish.nfd_dir.clone(), Duration::ZERO);
            let existed = publisher.remove()?;
            info!(path = %publisher.path().display(), existed, "NFD features file removed");
            Ok(())
        }
        PublishKind::Api => {
            let client = kube_client(args.publish.api_timeout.0).await?;
            let publisher =
                ApiPublisher::new(client, args.node_name.clone(), args.publish.api_timeout.0);
            // A few quick retries: uninstall hooks should not hang for minutes.
            let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
            let attempts = 5;
            for attempt in 1..=attempts {
                match publisher.cleanup(&args.publish.label_prefix).await {
                    Ok(outcome) => {
                        info!(
                            extra_removed = ?outcome.removed_by_merge_patch,
                            "released the agent's labels and annotation"
                        );
                        return Ok(());
                    }
                    Err(e) if attempt < attempts => {
                        let delay = backoff.next_delay();
                        warn!(error = %e, attempt, retry_in_ms = delay.as_millis() as u64, "cleanup failed; retrying");
                        tokio::time::sleep(delay).await;
                    }
                    Err(e) => {
                        return Err(e).context(format!(
                            "removing labels from node {} after {attempts} attempts",
                            args.node_name
                        ));
                    }
                }
            }
            bail!("cleanup made no attempt")
        }
    }
}
