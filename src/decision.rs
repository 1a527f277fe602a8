//! The decision: kvm or mshv for one launcher Pod, and why.
//!
//! Pure logic over the [`Facts`] port; the cluster lookups behind it are made lazily, only when
//! a rule needs them, so cheap rules (opt-out, devices, launcher flag) never cost a host call.
//!
//! Why per-Pod mshv needs care: on released KubeVirt (v1.8+) virt-handler serves, chowns and
//! allows in the device cgroup only the `/dev/<device>` of the cluster-wide hypervisor
//! (kubevirt/kubevirt `pkg/virt-handler/device-manager`, `pkg/virt-handler/cgroup/util.go`). A
//! launcher that takes `--hypervisor` is therefore switched only in mixed mode (`mixedMode`: the
//! KVM device stays for virt-handler, mshv-node-agent serves `/dev/mshv` beside it) or when
//! `perPodHypervisor` declares a virt-handler that serves both devices. And only a launcher
//! whose image is listed in `launcherImages` is switched at all: stock images cannot run mshv.

use serde_json::Value;

use crate::choice::{Hypervisor, Reason};
use crate::cluster::LookupError;
use crate::images;
use crate::launcher::{HypervisorFlag, Launcher};
use crate::settings::{EvictionStrategy, GateMode, OnLookupError, Settings};

/// The feature gate and hypervisor name upstream KubeVirt v1.8+ uses for cluster-wide mshv:
/// kubevirt/kubevirt's render config returns `config.Hypervisors[0]` only when the
/// `ConfigurableHypervisor` gate is on, else kvm (`GetHypervisor`, pkg/virt-config and
/// pkg/virt-controller/services); the hypervisor names are `kvm` and `hyperv-direct`.
pub const CONFIGURABLE_HYPERVISOR_GATE: &str = "ConfigurableHypervisor";
pub const HYPERV_DIRECT: &str = "hyperv-direct";

/// Why a running mshv VM cannot be live-migrated: QEMU's mshv accelerator registers a memory
/// listener without dirty-page logging (no `log_start`/`log_sync`/`log_global_start`:
/// qemu/qemu@5d7a40b5 accel/mshv/mshv-all.c `mshv_memory_listener`), so precopy has no way to
/// find the pages the guest writes while it is copied.
pub const MSHV_MIGRATION: &str = "QEMU's mshv accelerator has no dirty-page logging, so a \
     running mshv VM cannot be live-migrated";

/// How the gate stands for this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateState {
    /// The policy does nothing at all.
    Off,
    /// The policy chooses per Pod.
    PerPod,
    /// KubeVirt itself renders every launcher for mshv; the policy only steers scheduling.
    ClusterMshv,
}

/// Reads the gate from the KubeVirt CR (one without `spec.configuration` turns nothing on).
pub fn gate_from_kubevirt(kv: &Value, settings: &Settings) -> GateState {
    let Some(config) = kv.pointer("/spec/configuration") else {
        return GateState::Off;
    };
    let gates: Vec<&str> = config
        .pointer("/developerConfiguration/featureGates")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let hypervisor = config
        .pointer("/hypervisors/0/name")
        .and_then(Value::as_str);
    if gates.contains(&CONFIGURABLE_HYPERVISOR_GATE) && hypervisor == Some(HYPERV_DIRECT) {
        GateState::ClusterMshv
    } else if settings
        .gate
        .feature_gates
        .iter()
        .any(|g| gates.contains(&g.as_str()))
    {
        GateState::PerPod
    } else {
        GateState::Off
    }
}

/// What the decision may ask of the cluster. Implementations cache: each fact is fetched once.
pub trait Facts {
    fn kubevirt(&mut self) -> Result<&Value, LookupError>;
    /// Whether at least one node is capable.
    fn has_capable_node(&mut self) -> Result<bool, LookupError>;
    /// The source launcher's hypervisor for a migration target, `None` when unknown.
    fn migration_source(&mut self, launcher: &Launcher) -> Result<Option<Hypervisor>, LookupError>;
    /// The VM's eviction strategy as KubeVirt resolves it: the VMI's `spec.evictionStrategy`,
    /// else the KubeVirt CR's `spec.configuration.evictionStrategy` (`None` when neither says).
    fn eviction_strategy(&mut self, launcher: &Launcher) -> Result<Option<String>, LookupError>;
    /// Whether KubeVirt configured for KVM would mishandle this VM on mshv (mixed mode).
    fn unsupported_workload(&mut self, launcher: &Launcher) -> Result<bool, LookupError>;
}

/// Whether KubeVirt configured for KVM would mishandle this VMI on mshv (mixed mode): a
/// realtime VMI, or dedicated CPUs with an isolated emulator thread.
///
/// virt-handler's KVM runtime finds vCPU threads by their `CPU n/KVM` name to pin the emulator
/// thread apart and to give realtime vCPUs their scheduling (kubevirt/kubevirt
/// `pkg/hypervisor/kvm/runtime.go`, `pkg/hypervisor/kvm/realtime.go`); QEMU on mshv names
/// them `CPU n/MSHV` (qemu/qemu@5d7a40b5 accel/mshv/mshv-all.c `mshv_start_vcpu_thread`), so
/// those VMs would run without what they asked for.
pub fn unsupported_workload(vmi: &Value) -> bool {
    let Some(cpu) = vmi.pointer("/spec/domain/cpu") else {
        return false;
    };
    let on = |k: &str| cpu.get(k).and_then(Value::as_bool) == Some(true);
    cpu.get("realtime").is_some_and(|r| !r.is_null())
        || (on("dedicatedCpuPlacement") && on("isolateEmulatorThread"))
}

/// The VMI's own eviction strategy. The launcher Pod does not show it: virt-controller renders
/// the descheduler's evict-only annotation on every launcher whatever the strategy
/// (kubevirt/kubevirt@d923fdb8 pkg/virt-controller/services/template.go:1558, the same at
/// v1.9.0), and copies only VMI annotations, not the spec, so the VMI is read.
pub fn vmi_eviction_strategy(vmi: &Value) -> Option<&str> {
    vmi.pointer("/spec/evictionStrategy")
        .and_then(Value::as_str)
}

/// The cluster-wide eviction strategy, read when the VMI sets none: the order of kubevirt/kubevirt
/// `VMIEvictionStrategy` (pkg/util/migrations/migrations.go:116-122 at d923fdb8). Unset there
/// too, KubeVirt's default is `None` (pkg/virt-config/configuration.go:198).
pub fn cluster_eviction_strategy(kv: &Value) -> Option<&str> {
    kv.pointer("/spec/configuration/evictionStrategy")
        .and_then(Value::as_str)
}

/// What to do with the Pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The gate is off: no patch at all.
    Unchanged,
    /// Record the decision and shape the Pod as it says.
    Decided(Decision),
    /// `onLookupError: reject`.
    Reject(Rejection),
}

impl Verdict {
    /// The verdict with what the decision saw on its way.
    fn seen(self, seen: Seen) -> Verdict {
        match self {
            Verdict::Unchanged => Verdict::Unchanged,
            Verdict::Decided(d) => Verdict::Decided(Decision { seen, ..d }),
            Verdict::Reject(r) => Verdict::Reject(Rejection { seen, ..r }),
        }
    }
}

/// A refusal (`onLookupError: reject`): virt-controller retries the creation.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub message: String,
    pub seen: Seen,
}

/// What the decision saw of the cluster on its way, for the decision log: the log reads it
/// from the verdict, not from the lookup cache behind [`Facts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Seen {
    pub gate: GateSeen,
    /// Whether a capable node was found; `None` when the node list was not needed or its read
    /// failed.
    pub capable_node: Option<bool>,
}

/// How the gate stood for a decided (or refused) launcher. An off gate decides nothing, so it
/// has no value here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GateSeen {
    /// Per-Pod choice: `gate.mode: enabled`, or a KubeVirt CR that turns on a listed gate.
    #[default]
    PerPod,
    /// KubeVirt renders every launcher for mshv.
    ClusterMshv,
    /// `gate.mode: kubevirt` and the KubeVirt CR could not be read.
    Unknown,
}

impl GateSeen {
    pub fn as_str(self) -> &'static str {
        match self {
            GateSeen::PerPod => "per-pod",
            GateSeen::ClusterMshv => "cluster-mshv",
            GateSeen::Unknown => "unknown",
        }
    }
}

/// How the compute container is rewritten for mshv.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceEdit {
    /// The KVM device is replaced by the mshv device: fork builds (launchers without
    /// `--hypervisor`) and `perPodHypervisor`.
    Replace,
    /// The mshv device is added beside the KVM device: mixed mode on released KubeVirt.
    Add,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The hypervisor the VM will run on.
    pub hypervisor: Hypervisor,
    pub reason: Reason,
    /// Rewrite the compute container for mshv (device resources and `--hypervisor`).
    pub switch: Option<DeviceEdit>,
    /// AND the capable-node requirement into the Pod's node affinity.
    pub require_capable_node: bool,
    pub warnings: Vec<String>,
    /// What the decision saw of the cluster (set by [`decide`] for every verdict).
    pub seen: Seen,
}

impl Decision {
    fn keep(launcher: &Launcher, reason: Reason) -> Decision {
        Decision {
            hypervisor: launcher.rendered,
            reason,
            switch: None,
            require_capable_node: false,
            warnings: Vec::new(),
            seen: Seen::default(),
        }
    }

    fn mshv(reason: Reason, edit: DeviceEdit) -> Decision {
        Decision {
            hypervisor: Hypervisor::Mshv,
            reason,
            switch: Some(edit),
            require_capable_node: true,
            warnings: Vec::new(),
            seen: Seen::default(),
        }
    }

    fn warn(mut self, w: String) -> Decision {
        self.warnings.push(w);
        self
    }
}

fn vmi_ref(l: &Launcher) -> String {
    format!("{}/{}", l.namespace, l.vmi_name)
}

/// A failed lookup, handled as `onLookupError` says.
pub fn on_lookup_error(settings: &Settings, launcher: &Launcher, e: &LookupError) -> Verdict {
    match settings.on_lookup_error {
        OnLookupError::Reject => Verdict::Reject(Rejection {
            message: format!(
                "hyperv-layered: cannot decide the hypervisor of VMI {}: {e}; virt-controller \
                 retries, or set onLookupError: fallback to start it as rendered",
                vmi_ref(launcher)
            ),
            seen: Seen::default(),
        }),
        OnLookupError::Fallback => {
            Verdict::Decided(Decision::keep(launcher, Reason::LookupError).warn(format!(
                "hyperv-layered: VMI {} left on {} as rendered: {e}",
                vmi_ref(launcher),
                launcher.rendered.as_str()
            )))
        }
    }
}

/// What decides whether a launcher image can run mshv: not a version number (CentOS Stream
/// 10's qemu-kvm 10.1.0-8 and later carry a backported mshv accelerator), but what the image's
/// QEMU and libvirt list.
pub const IMAGE_TEST: &str = "an image whose QEMU lists the mshv accelerator and whose libvirt \
     has the hyperv virt type, see docs/install.md";

fn launcher_image_warning(launcher: &Launcher, consequence: &str) -> String {
    format!(
        "hyperv-layered: launcher image {:?} of VMI {} is not in launcherImages: {consequence} \
         (mshv needs {IMAGE_TEST}; stock KubeVirt v1.8/v1.9 images are not)",
        launcher.image,
        vmi_ref(launcher)
    )
}

fn no_capable_node_warning(settings: &Settings, launcher: &Launcher) -> String {
    format!(
        "hyperv-layered: no node is labelled {}=true, Ready and schedulable: VMI {} stays Pending \
         until mshv-node-agent verifies one",
        settings.node_label,
        vmi_ref(launcher)
    )
}

/// Decides for one launcher Pod created by a trusted creator.
pub fn decide(settings: &Settings, launcher: &Launcher, facts: &mut dyn Facts) -> Verdict {
    let mut facts = Observed {
        inner: facts,
        capable_node: None,
    };
    let gate = match settings.gate.mode {
        GateMode::Disabled => GateState::Off,
        GateMode::Enabled => GateState::PerPod,
        GateMode::Kubevirt => match facts.kubevirt() {
            Ok(kv) => gate_from_kubevirt(kv, settings),
            Err(e) => {
                let seen = Seen {
                    gate: GateSeen::Unknown,
                    capable_node: None,
                };
                return on_lookup_error(settings, launcher, &e).seen(seen);
            }
        },
    };
    let (gate, verdict) = match gate {
        GateState::Off => return Verdict::Unchanged,
        GateState::ClusterMshv => (
            GateSeen::ClusterMshv,
            decide_cluster_mshv(settings, launcher, &mut facts),
        ),
        GateState::PerPod => (
            GateSeen::PerPod,
            decide_per_pod(settings, launcher, &mut facts),
        ),
    };
    verdict.seen(Seen {
        gate,
        capable_node: facts.capable_node,
    })
}

/// The decision's [`Facts`], remembering what the node list said for [`Seen`].
struct Observed<'f> {
    inner: &'f mut dyn Facts,
    capable_node: Option<bool>,
}

impl Facts for Observed<'_> {
    fn kubevirt(&mut self) -> Result<&Value, LookupError> {
        self.inner.kubevirt()
    }

    fn has_capable_node(&mut self) -> Result<bool, LookupError> {
        let found = self.inner.has_capable_node();
        if let Ok(any) = found {
            self.capable_node = Some(any);
        }
        found
    }

    fn migration_source(&mut self, launcher: &Launcher) -> Result<Option<Hypervisor>, LookupError> {
        self.inner.migration_source(launcher)
    }

    fn eviction_strategy(&mut self, launcher: &Launcher) -> Result<Option<String>, LookupError> {
        self.inner.eviction_strategy(launcher)
    }

    fn unsupported_workload(&mut self, launcher: &Launcher) -> Result<bool, LookupError> {
        self.inner.unsupported_workload(launcher)
    }
}

/// KubeVirt already renders mshv; there is nothing to fall back to, only scheduling to steer.
fn decide_cluster_mshv(settings: &Settings, launcher: &Launcher, facts: &mut dyn Facts) -> Verdict {
    match facts.has_capable_node() {
        Err(e) => on_lookup_error(settings, launcher, &e),
        Ok(any) => {
            let mut d = Decision::keep(launcher, Reason::ClusterMshv);
            d.require_capable_node = true;
            if !any {
                d.reason = Reason::NoCapableNode;
                d = d.warn(no_capable_node_warning(settings, launcher));
            }
            // KubeVirt chose this image for every launcher; the policy cannot change it, only
            // say that the VM is unlikely to start (the more basic cause wins the reason).
            if !images::is_listed(&settings.launcher_images, &launcher.image) {
                d.reason = Reason::ImageNotListed;
                d = d.warn(launcher_image_warning(
                    launcher,
                    "KubeVirt renders it for mshv cluster-wide and the VM is unlikely to start",
                ));
            }
            Verdict::Decided(d)
        }
    }
}

fn decide_per_pod(settings: &Settings, launcher: &Launcher, facts: &mut dyn Facts) -> Verdict {
    // What the Pod alone decides comes before any lookup. A command line this policy does not
    // know is never edited (half an edit could leave `--hypervisor kvm` with the mshv device).
    if let Some(why) = &launcher.unknown_layout {
        return Verdict::Decided(
            Decision::keep(launcher, Reason::LauncherLayoutUnknown).warn(format!(
                "hyperv-layered: VMI {} left on {} as rendered: {why}",
                vmi_ref(launcher),
                launcher.rendered.as_str()
            )),
        );
    }
    // A host device is VFIO passthrough, which L1VH does not offer; a migration target with one
    // has a KVM source for the same reason.
    if launcher.incompatible.is_some() {
        return Verdict::Decided(Decision::keep(launcher, Reason::IncompatibleDevice));
    }
    // A live migration cannot cross hypervisors: the target follows its source whatever the
    // other rules would say today.
    if launcher.migration_job.is_some() {
        return decide_migration_target(settings, launcher, facts);
    }
    if launcher.opt_out {
        return Verdict::Decided(Decision::keep(launcher, Reason::OptOut));
    }
    let Some(edit) = device_edit(settings, launcher) else {
        return Verdict::Decided(Decision::keep(launcher, Reason::LauncherPinsKvm));
    };
    if !images::is_listed(&settings.launcher_images, &launcher.image) {
        return Verdict::Decided(
            Decision::keep(launcher, Reason::ImageNotListed)
                .warn(launcher_image_warning(launcher, "left on kvm")),
        );
    }
    // Mixed mode: realtime shows on the Pod, so it is decided before any lookup.
    if edit == DeviceEdit::Add && launcher.realtime {
        return Verdict::Decided(Decision::keep(launcher, Reason::WorkloadUnsupported));
    }
    let migration_warning = match live_migration_rule(settings, launcher, facts) {
        Err(e) => return on_lookup_error(settings, launcher, &e),
        Ok(LiveMigrationRule::KeepOnKvm(warning)) => {
            let d = Decision::keep(launcher, Reason::NeedsLiveMigration);
            return Verdict::Decided(match warning {
                Some(w) => d.warn(w),
                None => d,
            });
        }
        Ok(LiveMigrationRule::Mshv(warning)) => warning,
    };
    // An isolated emulator thread shows only on the VMI, and only matters with dedicated CPUs,
    // so the VMI is read for it only then (the live-migration rule's read, when it made one).
    if edit == DeviceEdit::Add && launcher.dedicated_cpus {
        match facts.unsupported_workload(launcher) {
            Err(e) => return on_lookup_error(settings, launcher, &e),
            Ok(true) => {
                return Verdict::Decided(Decision::keep(launcher, Reason::WorkloadUnsupported));
            }
            Ok(false) => {}
        }
    }
    match facts.has_capable_node() {
        Err(e) => on_lookup_error(settings, launcher, &e),
        Ok(false) => Verdict::Decided(Decision::keep(launcher, Reason::NoCapableNode)),
        Ok(true) => {
            let d = Decision::mshv(Reason::Selected, edit);
            Verdict::Decided(match migration_warning {
                Some(w) => d.warn(w),
                None => d,
            })
        }
    }
}

/// What the eviction strategy says about a VM that could go to mshv.
enum LiveMigrationRule {
    /// It must stay live-migratable: KVM (with a warning when the strategy is not one KubeVirt
    /// defines).
    KeepOnKvm(Option<String>),
    /// mshv may run it (with a warning when drains will try to migrate it).
    Mshv(Option<String>),
}

/// `liveMigration.keepOnKvm`: VMs whose eviction strategy is listed stay on KVM. A running mshv
/// VM cannot be live-migrated ([`MSHV_MIGRATION`]), and a `LiveMigrate` VM's drain waits on a
/// migration (pkg/util/migrations/migrations.go:128-135 at d923fdb8).
fn live_migration_rule(
    settings: &Settings,
    launcher: &Launcher,
    facts: &mut dyn Facts,
) -> Result<LiveMigrationRule, LookupError> {
    let keep = &settings.live_migration.keep_on_kvm;
    if keep.is_empty() {
        return Ok(LiveMigrationRule::Mshv(None));
    }
    let Some(name) = facts.eviction_strategy(launcher)? else {
        // Neither the VMI nor the KubeVirt CR sets one: KubeVirt's default, None.
        return Ok(if keep.contains(&EvictionStrategy::None) {
            LiveMigrationRule::KeepOnKvm(None)
        } else {
            LiveMigrationRule::Mshv(None)
        });
    };
    let Some(strategy) = EvictionStrategy::from_api(&name) else {
        // A strategy newer than this policy: it may well mean "migrate", so KVM, with a word.
        return Ok(LiveMigrationRule::KeepOnKvm(Some(format!(
            "hyperv-layered: VMI {} has evictionStrategy {name:?}, which this policy does not \
             know: kept on kvm in case it needs live migration",
            vmi_ref(launcher)
        ))));
    };
    if keep.contains(&strategy) {
        return Ok(LiveMigrationRule::KeepOnKvm(None));
    }
    let drain = match strategy {
        EvictionStrategy::None => return Ok(LiveMigrationRule::Mshv(None)),
        EvictionStrategy::LiveMigrate | EvictionStrategy::LiveMigrateIfPossible => {
            "a node drain has KubeVirt try to live-migrate it"
        }
        EvictionStrategy::External => "a node drain leaves it to the external controller",
    };
    Ok(LiveMigrationRule::Mshv(Some(format!(
        "hyperv-layered: VMI {} (evictionStrategy {}) goes to mshv: {drain}, and {MSHV_MIGRATION}; \
         stop it before draining its node",
        vmi_ref(launcher),
        strategy.as_str()
    ))))
}

/// How this launcher would be switched, or `None` when it pins KVM: a launcher without
/// `--hypervisor` (fork builds) detects `/dev/mshv` itself; one with it is switched only in
/// mixed mode or when `perPodHypervisor` declares a virt-handler that serves both devices.
fn device_edit(settings: &Settings, launcher: &Launcher) -> Option<DeviceEdit> {
    match launcher.hypervisor_flag {
        HypervisorFlag::Absent => Some(DeviceEdit::Replace),
        _ if settings.mixed_mode => Some(DeviceEdit::Add),
        _ if settings.per_pod_hypervisor => Some(DeviceEdit::Replace),
        _ => None,
    }
}

/// The target gets its source's hypervisor, with the same edits the source got.
fn decide_migration_target(
    settings: &Settings,
    launcher: &Launcher,
    facts: &mut dyn Facts,
) -> Verdict {
    match facts.migration_source(launcher) {
        Err(e) => on_lookup_error(settings, launcher, &e),
        Ok(None) => Verdict::Decided(
            Decision::keep(launcher, Reason::MigrationSourceUnknown).warn(format!(
                "hyperv-layered: the source of migration target for VMI {} was not found; \
                 left on {} as rendered",
                vmi_ref(launcher),
                launcher.rendered.as_str()
            )),
        ),
        Ok(Some(Hypervisor::Kvm)) => {
            Verdict::Decided(Decision::keep(launcher, Reason::MigrationSourceKvm))
        }
        Ok(Some(Hypervisor::Mshv)) => {
            if !images::is_listed(&settings.launcher_images, &launcher.image) {
                return Verdict::Decided(Decision::keep(launcher, Reason::ImageNotListed).warn(
                    launcher_image_warning(
                        launcher,
                        "its source runs on mshv and a migration cannot cross hypervisors, so \
                         this migration will fail",
                    ),
                ));
            }
            // The source was switched the way this policy switches such a launcher; a source
            // that pins KVM here only happens when the settings changed since (then Replace,
            // as before mixed mode existed).
            let edit = device_edit(settings, launcher).unwrap_or(DeviceEdit::Replace);
            // Following the source is still right (only mshv can run its state), but the
            // migration itself will fail: say so where the operator looks.
            let d = Decision::mshv(Reason::MigrationSourceMshv, edit).warn(format!(
                "hyperv-layered: VMI {} runs on mshv and this migration will fail: {MSHV_MIGRATION}",
                vmi_ref(launcher)
            ));
            match facts.has_capable_node() {
                Ok(false) => Verdict::Decided(d.warn(no_capable_node_warning(settings, launcher))),
                Ok(true) => Verdict::Decided(d),
                // The target must be mshv either way; the node list only fed a warning.
                Err(e) => Verdict::Decided(d.warn(format!("hyperv-layered: {e}"))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launcher::ArgList;
    use rstest::rstest;
    use serde_json::json;

    #[derive(Default)]
    struct Scripted {
        kubevirt: Option<Result<Value, LookupError>>,
        nodes: Option<Result<bool, LookupError>>,
        source: Option<Result<Option<Hypervisor>, LookupError>>,
        workload: Option<Result<bool, LookupError>>,
        eviction: Option<Result<Option<String>, LookupError>>,
        asked: Vec<&'static str>,
    }

    fn lookup_err() -> LookupError {
        LookupError {
            what: "listing".into(),
            cause: "boom".into(),
        }
    }

    impl Facts for Scripted {
        fn kubevirt(&mut self) -> Result<&Value, LookupError> {
            self.asked.push("kubevirt");
            match self.kubevirt.as_ref().expect("unexpected KubeVirt lookup") {
                Ok(v) => Ok(v),
                Err(e) => Err(e.clone()),
            }
        }
        fn has_capable_node(&mut self) -> Result<bool, LookupError> {
            self.asked.push("nodes");
            self.nodes.clone().expect("unexpected node lookup")
        }
        fn migration_source(&mut self, _: &Launcher) -> Result<Option<Hypervisor>, LookupError> {
            self.asked.push("source");
            self.source.clone().expect("unexpected source lookup")
        }
        fn eviction_strategy(&mut self, _: &Launcher) -> Result<Option<String>, LookupError> {
            self.asked.push("eviction");
            self.eviction.clone().expect("unexpected eviction lookup")
        }
        fn unsupported_workload(&mut self, _: &Launcher) -> Result<bool, LookupError> {
            self.asked.push("workload");
            self.workload.clone().expect("unexpected VMI lookup")
        }
    }

    fn launcher() -> Launcher {
        Launcher {
            compute_index: 0,
            namespace: "ns".into(),
            vmi_name: "vm".into(),
            vmi_uid: "uid".into(),
            migration_job: None,
            hypervisor_flag: HypervisorFlag::Absent,
            unknown_layout: None,
            rendered: Hypervisor::Kvm,
            incompatible: None,
            opt_out: false,
            image: "registry.example/kv/virt-launcher:v1.9.0-mshv".into(),
            dedicated_cpus: false,
            realtime: false,
        }
    }

    fn kv(gates: &[&str], hypervisor: Option<&str>) -> Value {
        let mut c = json!({"developerConfiguration": {"featureGates": gates}});
        if let Some(h) = hypervisor {
            c["hypervisors"] = json!([{ "name": h }]);
        }
        json!({"spec": {"configuration": c}})
    }

    /// Per-Pod mode without the live-migration rule (`live_migration_rows` test that one).
    fn enabled() -> Settings {
        let mut s = Settings::default();
        s.gate.mode = GateMode::Enabled;
        s.launcher_images = vec!["registry.example/kv/virt-launcher".into()];
        s.live_migration.keep_on_kvm.clear();
        s
    }

    /// `liveMigration.keepOnKvm`: the strategy the VMI (or the CR) resolves to, the list, then
    /// the expected reason, whether a warning is given, and the lookups.
    #[rstest]
    #[case::live_migrate_default(Some("LiveMigrate"), vec![EvictionStrategy::LiveMigrate],
        Reason::NeedsLiveMigration, false, &["eviction"])]
    #[case::if_possible_goes_to_mshv_warned(Some("LiveMigrateIfPossible"), vec![EvictionStrategy::LiveMigrate],
        Reason::Selected, true, &["eviction", "nodes"])]
    #[case::if_possible_kept_when_listed(Some("LiveMigrateIfPossible"),
        vec![EvictionStrategy::LiveMigrate, EvictionStrategy::LiveMigrateIfPossible],
        Reason::NeedsLiveMigration, false, &["eviction"])]
    #[case::external_warned(Some("External"), vec![EvictionStrategy::LiveMigrate], Reason::Selected, true, &["eviction", "nodes"])]
    #[case::none(Some("None"), vec![EvictionStrategy::LiveMigrate], Reason::Selected, false, &["eviction", "nodes"])]
    #[case::unset_is_none(None, vec![EvictionStrategy::LiveMigrate], Reason::Selected, false, &["eviction", "nodes"])]
    #[case::unset_kept_when_none_listed(None, vec![EvictionStrategy::None], Reason::NeedsLiveMigration, false, &["eviction"])]
    #[case::unknown_strategy_kept(Some("Sometimes"), vec![EvictionStrategy::LiveMigrate],
        Reason::NeedsLiveMigration, true, &["eviction"])]
    #[case::live_migrate_allowed(Some("LiveMigrate"), vec![EvictionStrategy::External], Reason::Selected, true, &["eviction", "nodes"])]
    #[case::rule_off_reads_nothing(Some("LiveMigrate"), vec![], Reason::Selected, false, &["nodes"])]
    fn live_migration_rows(
        #[case] strategy: Option<&str>,
        #[case] keep: Vec<EvictionStrategy>,
        #[case] reason: Reason,
        #[case] warned: bool,
        #[case] asked: &[&str],
    ) {
        let mut s = enabled();
        s.live_migration.keep_on_kvm = keep;
        let mut f = Scripted {
            eviction: Some(Ok(strategy.map(str::to_string))),
            nodes: nodes(1),
            ..Default::default()
        };
        let d = decided(decide(&s, &launcher(), &mut f));
        assert_eq!(d.reason, reason);
        assert_eq!(d.hypervisor == Hypervisor::Mshv, reason == Reason::Selected);
        assert_eq!(!d.warnings.is_empty(), warned, "{:?}", d.warnings);
        if warned && reason == Reason::Selected {
            assert!(
                d.warnings[0].contains("dirty-page logging"),
                "{:?}",
                d.warnings
            );
        }
        assert_eq!(f.asked, asked);
    }

    #[test]
    fn a_failed_eviction_read_follows_on_lookup_error() {
        let mut s = enabled();
        s.live_migration.keep_on_kvm = vec![EvictionStrategy::LiveMigrate];
        let mut f = Scripted {
            eviction: Some(Err(lookup_err())),
            ..Default::default()
        };
        let d = decided(decide(&s, &launcher(), &mut f));
        assert_eq!((d.reason, d.switch), (Reason::LookupError, None));
        s.on_lookup_error = OnLookupError::Reject;
        let mut f = Scripted {
            eviction: Some(Err(lookup_err())),
            ..Default::default()
        };
        assert!(matches!(
            decide(&s, &launcher(), &mut f),
            Verdict::Reject(_)
        ));
    }

    #[test]
    fn eviction_strategy_is_read_from_the_vmi_then_the_cr() {
        assert_eq!(
            vmi_eviction_strategy(&json!({"spec": {"evictionStrategy": "LiveMigrate"}})),
            Some("LiveMigrate")
        );
        assert_eq!(vmi_eviction_strategy(&json!({"spec": {}})), None);
        assert_eq!(
            vmi_eviction_strategy(&json!({"spec": {"evictionStrategy": 3}})),
            None
        );
        assert_eq!(
            cluster_eviction_strategy(
                &json!({"spec": {"configuration": {"evictionStrategy": "External"}}})
            ),
            Some("External")
        );
        assert_eq!(cluster_eviction_strategy(&json!({})), None);
    }

    fn nodes(n: usize) -> Option<Result<bool, LookupError>> {
        Some(Ok(n > 0))
    }

    fn decided(v: Verdict) -> Decision {
        match v {
            Verdict::Decided(d) => d,
            other => panic!("expected a decision, got {other:?}"),
        }
    }

    #[test]
    fn gate_from_the_kubevirt_cr() {
        let s = Settings::default();
        let cases = [
            (json!({}), GateState::Off),
            (kv(&[], None), GateState::Off),
            (kv(&["ConfigurableHypervisor"], Some("kvm")), GateState::Off),
            (kv(&[], Some("hyperv-direct")), GateState::Off),
            (
                kv(&["ConfigurableHypervisor"], Some("hyperv-direct")),
                GateState::ClusterMshv,
            ),
            (kv(&["HyperVLayered"], None), GateState::PerPod),
            (kv(&["Snapshot", "HyperVL1VH"], None), GateState::PerPod),
            (
                kv(
                    &["HyperVLayered", "ConfigurableHypervisor"],
                    Some("hyperv-direct"),
                ),
                GateState::ClusterMshv,
            ),
            (
                json!({"spec": {"configuration": {"developerConfiguration": {"featureGates": "HyperVLayered"}}}}),
                GateState::Off,
            ),
        ];
        for (cr, want) in cases {
            assert_eq!(gate_from_kubevirt(&cr, &s), want, "{cr:?}");
        }
    }

    /// Every verdict says how the gate stood and what the node list said, so that the
    /// decision log need not look into the lookup cache.
    #[test]
    fn verdicts_carry_the_gate_and_the_capable_node_fact() {
        let seen = |v: Verdict| match v {
            Verdict::Decided(d) => d.seen,
            Verdict::Reject(r) => r.seen,
            Verdict::Unchanged => panic!("unchanged"),
        };
        let l = launcher();
        let mut f = Scripted {
            kubevirt: Some(Err(lookup_err())),
            ..Default::default()
        };
        let want = Seen {
            gate: GateSeen::Unknown,
            capable_node: None,
        };
        assert_eq!(seen(decide(&Settings::default(), &l, &mut f)), want);

        let mut s = enabled();
        s.gate.mode = GateMode::Kubevirt;
        s.gate.feature_gates = vec!["HyperVLayered".into()];
        for (gates, hypervisor, want_gate) in [
            (&["HyperVLayered"][..], None, GateSeen::PerPod),
            (
                &["ConfigurableHypervisor"][..],
                Some("hyperv-direct"),
                GateSeen::ClusterMshv,
            ),
        ] {
            for (nodes, want_capable) in [(nodes(1), Some(true)), (nodes(0), Some(false))] {
                let mut f = Scripted {
                    kubevirt: Some(Ok(kv(gates, hypervisor))),
                    nodes,
                    ..Default::default()
                };
                let want = Seen {
                    gate: want_gate,
                    capable_node: want_capable,
                };
                assert_eq!(seen(decide(&s, &l, &mut f)), want, "{gates:?}");
            }
        }

        // A failed node read leaves the fact unknown, decided or refused.
        let mut s = enabled();
        for on_error in [OnLookupError::Fallback, OnLookupError::Reject] {
            s.on_lookup_error = on_error;
            let mut f = Scripted {
                nodes: Some(Err(lookup_err())),
                ..Default::default()
            };
            assert_eq!(
                seen(decide(&s, &l, &mut f)),
                Seen::default(),
                "{on_error:?}"
            );
        }
        // A rule that needs no lookup reads no node list.
        let mut opt_out = launcher();
        opt_out.opt_out = true;
        let mut f = Scripted::default();
        assert_eq!(seen(decide(&enabled(), &opt_out, &mut f)), Seen::default());
    }

    #[test]
    fn disabled_and_off_gates_leave_the_pod_alone_without_node_lookups() {
        let mut s = Settings::default();
        s.gate.mode = GateMode::Disabled;
        let mut f = Scripted::default();
        assert_eq!(decide(&s, &launcher(), &mut f), Verdict::Unchanged);
        assert!(f.asked.is_empty());

        let mut f = Scripted {
            kubevirt: Some(Ok(kv(&[], None))),
            ..Default::default()
        };
        assert_eq!(
            decide(&Settings::default(), &launcher(), &mut f),
            Verdict::Unchanged
        );
        assert_eq!(f.asked, ["kubevirt"]);
    }

    type Tweak = fn(&mut Launcher, &mut Settings);

    fn flagged(l: &mut Launcher) {
        l.hypervisor_flag = HypervisorFlag::Separate(ArgList::Command, 3);
    }

    fn mixed(l: &mut Launcher, s: &mut Settings) {
        flagged(l);
        s.mixed_mode = true;
    }

    /// Every per-Pod row of the README's decision table: the launcher/settings tweak, how many
    /// capable nodes, the VMI's workload verdict, then the expected hypervisor, reason, device
    /// edit and lookups (in order).
    #[rstest]
    #[case::selected(|_: &mut Launcher, _: &mut Settings| {}, 2, false, Hypervisor::Mshv, Reason::Selected, Some(DeviceEdit::Replace), &["nodes"])]
    #[case::no_capable_node(|_: &mut Launcher, _: &mut Settings| {}, 0, false, Hypervisor::Kvm, Reason::NoCapableNode, None, &["nodes"])]
    #[case::opt_out(|l: &mut Launcher, _: &mut Settings| l.opt_out = true, 2, false, Hypervisor::Kvm, Reason::OptOut, None, &[])]
    #[case::incompatible_device(|l: &mut Launcher, _: &mut Settings| l.incompatible = Some("devices.kubevirt.io/sev".into()), 2, false,
        Hypervisor::Kvm, Reason::IncompatibleDevice, None, &[])]
    #[case::launcher_pins_kvm(|l: &mut Launcher, _: &mut Settings| flagged(l), 2, false, Hypervisor::Kvm, Reason::LauncherPinsKvm, None, &[])]
    #[case::unlisted_image(|l: &mut Launcher, _: &mut Settings| l.image = "quay.io/kubevirt/virt-launcher:v1.8.2".into(), 2, false,
        Hypervisor::Kvm, Reason::ImageNotListed, None, &[])]
    #[case::no_image(|l: &mut Launcher, _: &mut Settings| l.image.clear(), 2, false, Hypervisor::Kvm, Reason::ImageNotListed, None, &[])]
    #[case::per_pod_hypervisor(|l: &mut Launcher, s: &mut Settings| { flagged(l); s.per_pod_hypervisor = true }, 2, false,
        Hypervisor::Mshv, Reason::Selected, Some(DeviceEdit::Replace), &["nodes"])]
    #[case::per_pod_hypervisor_joined_no_node(
        |l: &mut Launcher, s: &mut Settings| { l.hypervisor_flag = HypervisorFlag::Joined(ArgList::Command, 3); s.per_pod_hypervisor = true }, 0, false,
        Hypervisor::Kvm, Reason::NoCapableNode, None, &["nodes"])]
    #[case::mixed_selected(mixed, 2, false, Hypervisor::Mshv, Reason::Selected, Some(DeviceEdit::Add), &["nodes"])]
    #[case::mixed_no_node(mixed, 0, false, Hypervisor::Kvm, Reason::NoCapableNode, None, &["nodes"])]
    #[case::mixed_unlisted_image(|l: &mut Launcher, s: &mut Settings| { mixed(l, s); l.image = "quay.io/kubevirt/virt-launcher:v1.9.0".into() },
        2, false, Hypervisor::Kvm, Reason::ImageNotListed, None, &[])]
    #[case::mixed_realtime(|l: &mut Launcher, s: &mut Settings| { mixed(l, s); l.realtime = true; l.dedicated_cpus = true }, 2, false,
        Hypervisor::Kvm, Reason::WorkloadUnsupported, None, &[])]
    #[case::mixed_dedicated_isolated(|l: &mut Launcher, s: &mut Settings| { mixed(l, s); l.dedicated_cpus = true }, 2,
        true,
        Hypervisor::Kvm, Reason::WorkloadUnsupported, None, &["workload"])]
    #[case::mixed_dedicated_fine(|l: &mut Launcher, s: &mut Settings| { mixed(l, s); l.dedicated_cpus = true }, 2, false,
        Hypervisor::Mshv, Reason::Selected, Some(DeviceEdit::Add), &["workload", "nodes"])]
    #[case::fork_launcher_ignores_mixed(|_: &mut Launcher, s: &mut Settings| s.mixed_mode = true, 2, false,
        Hypervisor::Mshv, Reason::Selected, Some(DeviceEdit::Replace), &["nodes"])]
    #[case::realtime_outside_mixed_is_not_read(|l: &mut Launcher, _: &mut Settings| l.realtime = true, 2, false,
        Hypervisor::Mshv, Reason::Selected, Some(DeviceEdit::Replace), &["nodes"])]
    #[case::layout_unknown(|l: &mut Launcher, _: &mut Settings| l.unknown_layout = Some("--hypervisor occurs 2 times".into()), 2, false,
        Hypervisor::Kvm, Reason::LauncherLayoutUnknown, None, &[])]
    #[case::layout_unknown_before_the_migration_source(|l: &mut Launcher, _: &mut Settings| {
            l.unknown_layout = Some("no value".into()); l.migration_job = Some("job".into()) }, 2, false,
        Hypervisor::Kvm, Reason::LauncherLayoutUnknown, None, &[])]
    #[case::mixed_dedicated_gpu_reads_nothing(|l: &mut Launcher, s: &mut Settings| {
            mixed(l, s); l.dedicated_cpus = true; l.incompatible = Some("nvidia.com/GA102GL_A10".into()) }, 2, true,
        Hypervisor::Kvm, Reason::IncompatibleDevice, None, &[])]
    #[case::host_device_on_a_migration_target(|l: &mut Launcher, _: &mut Settings| {
            l.migration_job = Some("job".into()); l.incompatible = Some("resources.claims[gpu]".into()) }, 2, false,
        Hypervisor::Kvm, Reason::IncompatibleDevice, None, &[])]
    #[case::main_layout_mixed(|l: &mut Launcher, s: &mut Settings| {
            l.hypervisor_flag = HypervisorFlag::Separate(ArgList::Args, 20); s.mixed_mode = true }, 2, false,
        Hypervisor::Mshv, Reason::Selected, Some(DeviceEdit::Add), &["nodes"])]
    #[case::main_layout_pins_kvm(|l: &mut Launcher, _: &mut Settings| l.hypervisor_flag = HypervisorFlag::Separate(ArgList::Args, 20), 2, false,
        Hypervisor::Kvm, Reason::LauncherPinsKvm, None, &[])]
    #[allow(clippy::too_many_arguments)]
    fn per_pod_rows(
        #[case] tweak: Tweak,
        #[case] capable: usize,
        #[case] workload: bool,
        #[case] hv: Hypervisor,
        #[case] reason: Reason,
        #[case] switch: Option<DeviceEdit>,
        #[case] asked: &[&str],
    ) {
        let (mut l, mut s) = (launcher(), enabled());
        tweak(&mut l, &mut s);
        let mut f = Scripted {
            nodes: nodes(capable),
            workload: Some(Ok(workload)),
            ..Default::default()
        };
        let d = decided(decide(&s, &l, &mut f));
        assert_eq!((d.hypervisor, d.reason, d.switch), (hv, reason, switch));
        assert_eq!(d.require_capable_node, switch.is_some());
        assert_eq!(
            d.warnings.is_empty(),
            !matches!(
                reason,
                Reason::ImageNotListed | Reason::LauncherLayoutUnknown
            ),
            "{:?}",
            d.warnings
        );
        assert_eq!(f.asked, asked);
    }

    #[test]
    fn the_workload_rule_reads_the_vmi() {
        let cpu = |c: Value| json!({"spec": {"domain": {"cpu": c}}});
        assert!(unsupported_workload(&cpu(
            json!({"dedicatedCpuPlacement": true, "isolateEmulatorThread": true})
        )));
        assert!(unsupported_workload(&cpu(
            json!({"dedicatedCpuPlacement": true, "realtime": {}})
        )));
        for fine in [
            cpu(json!({"dedicatedCpuPlacement": true})),
            cpu(json!({"isolateEmulatorThread": true})),
            cpu(json!({"dedicatedCpuPlacement": true, "realtime": null})),
            cpu(json!({"dedicatedCpuPlacement": "true", "isolateEmulatorThread": "yes"})),
            json!({}),
            json!(null),
        ] {
            assert!(!unsupported_workload(&fine), "{fine}");
        }
    }

    #[test]
    fn a_failed_vmi_read_in_mixed_mode_follows_on_lookup_error() {
        let (mut l, mut s) = (launcher(), enabled());
        mixed(&mut l, &mut s);
        l.dedicated_cpus = true;
        let mut f = Scripted {
            workload: Some(Err(lookup_err())),
            ..Default::default()
        };
        let d = decided(decide(&s, &l, &mut f));
        assert_eq!((d.reason, d.switch), (Reason::LookupError, None));
        assert_eq!(f.asked, ["workload"]);
    }

    #[test]
    fn migration_targets_follow_their_source() {
        let mut l = launcher();
        l.migration_job = Some("job".into());
        l.opt_out = true; // the source wins even over an opt-out added after the VM started
        let s = enabled();

        let mut f = Scripted {
            source: Some(Ok(Some(Hypervisor::Mshv))),
            nodes: nodes(1),
            ..Default::default()
        };
        let d = decided(decide(&s, &l, &mut f));
        assert_eq!(
            (d.hypervisor, d.reason, d.switch),
            (
                Hypervisor::Mshv,
                Reason::MigrationSourceMshv,
                Some(DeviceEdit::Replace)
            )
        );
        assert_eq!(d.warnings.len(), 1, "{:?}", d.warnings);
        assert!(
            d.warnings[0].contains("no dirty-page logging"),
            "{:?}",
            d.warnings
        );

        let mut f = Scripted {
            source: Some(Ok(Some(Hypervisor::Mshv))),
            nodes: nodes(0),
            ..Default::default()
        };
        let d = decided(decide(&s, &l, &mut f));
        assert!(d.switch.is_some());
        assert!(d.warnings[1].contains("stays Pending"), "{:?}", d.warnings);

        let mut f = Scripted {
            source: Some(Ok(Some(Hypervisor::Kvm))),
            ..Default::default()
        };
        let d = decided(decide(&s, &l, &mut f));
        assert_eq!(
            (d.hypervisor, d.reason, d.switch),
            (Hypervisor::Kvm, Reason::MigrationSourceKvm, None)
        );
        assert_eq!(f.asked, ["source"]);

        let mut f = Scripted {
            source: Some(Ok(None)),
            ..Default::default()
        };
        let d = decided(decide(&s, &l, &mut f));
        assert_eq!(d.reason, Reason::MigrationSourceUnknown);
        assert!(d.switch.is_none());
        assert!(d.warnings[0].contains("ns/vm"));

        let mut f = Scripted {
            source: Some(Err(lookup_err())),
            ..Default::default()
        };
        let d = decided(decide(&s, &l, &mut f));
        assert_eq!(d.reason, Reason::LookupError);

        // An mshv source, but this target's image is not listed: never switched.
        let mut unlisted = l.clone();
        unlisted.image = "quay.io/kubevirt/virt-launcher:v1.9.0".into();
        let mut f = Scripted {
            source: Some(Ok(Some(Hypervisor::Mshv))),
            ..Default::default()
        };
        let d = decided(decide(&s, &unlisted, &mut f));
        assert_eq!((d.reason, d.switch), (Reason::ImageNotListed, None));
        assert!(d.warnings[0].contains("will fail"), "{:?}", d.warnings);

        // Mixed mode: the target gets the source's edits (the mshv device added).
        let (mut ml, mut ms) = (l.clone(), s.clone());
        mixed(&mut ml, &mut ms);
        let mut f = Scripted {
            source: Some(Ok(Some(Hypervisor::Mshv))),
            nodes: nodes(1),
            ..Default::default()
        };
        let d = decided(decide(&ms, &ml, &mut f));
        assert_eq!(
            (d.reason, d.switch),
            (Reason::MigrationSourceMshv, Some(DeviceEdit::Add))
        );
    }

    #[test]
    fn cluster_mshv_steers_scheduling_only() {
        let mut l = launcher();
        l.rendered = Hypervisor::Mshv;
        let listed = Settings {
            launcher_images: vec!["registry.example/kv/*".into()],
            ..Settings::default()
        };
        let cr = Some(Ok(kv(&["ConfigurableHypervisor"], Some("hyperv-direct"))));
        let mut f = Scripted {
            kubevirt: cr.clone(),
            nodes: nodes(3),
            ..Default::default()
        };
        let d = decided(decide(&listed, &l, &mut f));
        assert_eq!(
            (d.hypervisor, d.reason, d.switch, d.require_capable_node),
            (Hypervisor::Mshv, Reason::ClusterMshv, None, true)
        );
        assert_eq!(f.asked, ["kubevirt", "nodes"]);

        let mut f = Scripted {
            kubevirt: cr.clone(),
            nodes: nodes(0),
            ..Default::default()
        };
        let d = decided(decide(&listed, &l, &mut f));
        assert_eq!(
            (d.reason, d.require_capable_node),
            (Reason::NoCapableNode, true)
        );
        assert!(d.warnings[0].contains("stays Pending"));

        // An image not listed: still mshv and steered (KubeVirt renders it), but the reason
        // and a warning say the VM is unlikely to start; the node warning stays too.
        for (capable, warnings) in [(3, 1), (0, 2)] {
            let mut f = Scripted {
                kubevirt: cr.clone(),
                nodes: nodes(capable),
                ..Default::default()
            };
            let d = decided(decide(&Settings::default(), &l, &mut f));
            assert_eq!(
                (d.hypervisor, d.reason, d.switch, d.require_capable_node),
                (Hypervisor::Mshv, Reason::ImageNotListed, None, true)
            );
            assert_eq!(d.warnings.len(), warnings, "{:?}", d.warnings);
            assert!(
                d.warnings
                    .last()
                    .unwrap()
                    .contains("registry.example/kv/virt-launcher")
            );
            assert!(
                d.warnings
                    .last()
                    .unwrap()
                    .contains("lists the mshv accelerator")
            );
        }
    }

    #[test]
    fn lookup_errors_fall_back_or_reject() {
        let l = launcher();
        let mut f = Scripted {
            kubevirt: Some(Err(lookup_err())),
            ..Default::default()
        };
        let d = decided(decide(&Settings::default(), &l, &mut f));
        assert_eq!(
            (d.hypervisor, d.reason, d.switch),
            (Hypervisor::Kvm, Reason::LookupError, None)
        );
        assert!(d.warnings[0].contains("boom"));

        let mut s = enabled();
        s.on_lookup_error = OnLookupError::Reject;
        let mut f = Scripted {
            nodes: Some(Err(lookup_err())),
            ..Default::default()
        };
        match decide(&s, &l, &mut f) {
            Verdict::Reject(Rejection { message: m, .. }) => {
                assert!(m.contains("ns/vm") && m.contains("boom"), "{m}")
            }
            other => panic!("{other:?}"),
        }
    }
}
