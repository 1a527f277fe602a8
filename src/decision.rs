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

use crate::cluster::LookupError;
use crate::images;
use crate::launcher::{HypervisorFlag, Launcher};
use crate::record::{Hypervisor, Reason};
use crate::settings::{GateMode, OnLookupError, Settings};

/// The feature gate and hypervisor name upstream KubeVirt v1.8+ uses for cluster-wide mshv:
/// kubevirt/kubevirt's render config returns `config.Hypervisors[0]` only when the
/// `ConfigurableHypervisor` gate is on, else kvm (`GetHypervisor`, pkg/virt-config and
/// pkg/virt-controller/services); the hypervisor names are `kvm` and `hyperv-direct`.
pub const CONFIGURABLE_HYPERVISOR_GATE: &str = "ConfigurableHypervisor";
pub const HYPERV_DIRECT: &str = "hyperv-direct";

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

/// Reads the gate from the KubeVirt CR (`None`: KubeVirt is not installed).
pub fn gate_from_kubevirt(kv: Option<&Value>, settings: &Settings) -> GateState {
    let Some(config) = kv.and_then(|kv| kv.pointer("/spec/configuration")) else {
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
    fn kubevirt(&mut self) -> Result<Option<&Value>, LookupError>;
    /// Whether at least one node is capable.
    fn has_capable_node(&mut self) -> Result<bool, LookupError>;
    /// The source launcher's hypervisor for a migration target, `None` when unknown.
    fn migration_source(&mut self, launcher: &Launcher) -> Result<Option<Hypervisor>, LookupError>;
    /// Why KubeVirt configured for KVM would mishandle this VM on mshv (mixed mode), if it would.
    fn unsupported_workload(
        &mut self,
        launcher: &Launcher,
    ) -> Result<Option<&'static str>, LookupError>;
}

/// Why KubeVirt configured for KVM would mishandle this VMI on mshv, if it would (mixed mode).
///
/// virt-handler's KVM runtime finds vCPU threads by their `CPU n/KVM` name to pin the emulator
/// thread apart and to give realtime vCPUs their scheduling (kubevirt/kubevirt
/// `pkg/hypervisor/kvm/runtime.go`, `pkg/hypervisor/kvm/realtime.go`); QEMU on mshv names
/// them otherwise, so those VMs would run without what they asked for.
pub fn unsupported_workload(vmi: &Value) -> Option<&'static str> {
    let cpu = vmi.pointer("/spec/domain/cpu")?;
    let on = |k: &str| cpu.get(k).and_then(Value::as_bool) == Some(true);
    if cpu.get("realtime").is_some_and(|r| !r.is_null()) {
        Some("realtime")
    } else if on("dedicatedCpuPlacement") && on("isolateEmulatorThread") {
        Some("dedicated CPUs with isolateEmulatorThread")
    } else {
        None
    }
}

/// What to do with the Pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The gate is off: no patch at all.
    Unchanged,
    /// Record the decision and shape the Pod as it says.
    Decided(Decision),
    /// `onLookupError: reject`.
    Reject(String),
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
}

impl Decision {
    fn keep(launcher: &Launcher, reason: Reason) -> Decision {
        Decision {
            hypervisor: launcher.rendered,
            reason,
            switch: None,
            require_capable_node: false,
            warnings: Vec::new(),
        }
    }

    fn mshv(reason: Reason, edit: DeviceEdit) -> Decision {
        Decision {
            hypervisor: Hypervisor::Mshv,
            reason,
            switch: Some(edit),
            require_capable_node: true,
            warnings: Vec::new(),
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
        OnLookupError::Reject => Verdict::Reject(format!(
            "hyperv-layered: cannot decide the hypervisor of VMI {}: {e}; virt-controller retries, \
             or set onLookupError: fallback to start it as rendered",
            vmi_ref(launcher)
        )),
        OnLookupError::Fallback => {
            Verdict::Decided(Decision::keep(launcher, Reason::LookupError).warn(format!(
                "hyperv-layered: VMI {} left on {} as rendered: {e}",
                vmi_ref(launcher),
                launcher.rendered.as_str()
            )))
        }
    }
}

fn launcher_image_warning(launcher: &Launcher, consequence: &str) -> String {
    format!(
        "hyperv-layered: launcher image {:?} of VMI {} is not in launcherImages: {consequence} \
         (mshv needs libvirt >= 11.10 with the hyperv virt type and QEMU >= 10.2 with mshv; \
         stock KubeVirt v1.8/v1.9 images have neither)",
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
    let gate = match settings.gate.mode {
        GateMode::Disabled => GateState::Off,
        GateMode::Enabled => GateState::PerPod,
        GateMode::Kubevirt => match facts.kubevirt() {
            Ok(kv) => gate_from_kubevirt(kv, settings),
            Err(e) => return on_lookup_error(settings, launcher, &e),
        },
    };
    match gate {
        GateState::Off => Verdict::Unchanged,
        GateState::ClusterMshv => decide_cluster_mshv(settings, launcher, facts),
        GateState::PerPod => decide_per_pod(settings, launcher, facts),
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
                d.reason = Reason::LauncherImage;
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
    // A live migration cannot cross hypervisors: the target follows its source whatever the
    // other rules would say today.
    if launcher.migration_job.is_some() {
        return decide_migration_target(settings, launcher, facts);
    }
    if launcher.opt_out {
        return Verdict::Decided(Decision::keep(launcher, Reason::OptOut));
    }
    if launcher.incompatible.is_some() {
        return Verdict::Decided(Decision::keep(launcher, Reason::IncompatibleDevice));
    }
    let Some(edit) = device_edit(settings, launcher) else {
        return Verdict::Decided(Decision::keep(launcher, Reason::LauncherPinsKvm));
    };
    if !images::is_listed(&settings.launcher_images, &launcher.image) {
        return Verdict::Decided(
            Decision::keep(launcher, Reason::LauncherImage)
                .warn(launcher_image_warning(launcher, "left on kvm")),
        );
    }
    if edit == DeviceEdit::Add {
        // Realtime shows on the Pod; an isolated emulator thread only on the VMI, and only
        // with dedicated CPUs, so the VMI is read only for those.
        let unsupported = if launcher.realtime {
            Ok(Some("realtime"))
        } else if launcher.dedicated_cpus {
            facts.unsupported_workload(launcher)
        } else {
            Ok(None)
        };
        match unsupported {
            Err(e) => return on_lookup_error(settings, launcher, &e),
            Ok(Some(_)) => {
                return Verdict::Decided(Decision::keep(launcher, Reason::WorkloadUnsupported));
            }
            Ok(None) => {}
        }
    }
    match facts.has_capable_node() {
        Err(e) => on_lookup_error(settings, launcher, &e),
        Ok(false) => Verdict::Decided(Decision::keep(launcher, Reason::NoCapableNode)),
        Ok(true) => Verdict::Decided(Decision::mshv(Reason::Selected, edit)),
    }
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
                return Verdict::Decided(Decision::keep(launcher, Reason::LauncherImage).warn(
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
            let d = Decision::mshv(Reason::MigrationSourceMshv, edit);
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
    use rstest::rstest;
    use serde_json::json;

    #[derive(Default)]
    struct Scripted {
        kubevirt: Option<Result<Option<Value>, LookupError>>,
        nodes: Option<Result<bool, LookupError>>,
        source: Option<Result<Option<Hypervisor>, LookupError>>,
        workload: Option<Result<Option<&'static str>, LookupError>>,
        asked: Vec<&'static str>,
    }

    fn lookup_err() -> LookupError {
        LookupError {
            what: "listing".into(),
            cause: "boom".into(),
        }
    }

    impl Facts for Scripted {
        fn kubevirt(&mut self) -> Result<Option<&Value>, LookupError> {
            self.asked.push("kubevirt");
            match self.kubevirt.as_ref().expect("unexpected KubeVirt lookup") {
                Ok(v) => Ok(v.as_ref()),
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
        fn unsupported_workload(
            &mut self,
            _: &Launcher,
        ) -> Result<Option<&'static str>, LookupError> {
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

    fn enabled() -> Settings {
        let mut s = Settings::default();
        s.gate.mode = GateMode::Enabled;
        s.launcher_images = vec!["registry.example/kv/virt-launcher".into()];
        s
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
            (None, GateState::Off),
            (Some(json!({})), GateState::Off),
            (Some(kv(&[], None)), GateState::Off),
            (
                Some(kv(&["ConfigurableHypervisor"], Some("kvm"))),
                GateState::Off,
            ),
            (Some(kv(&[], Some("hyperv-direct"))), GateState::Off),
            (
                Some(kv(&["ConfigurableHypervisor"], Some("hyperv-direct"))),
                GateState::ClusterMshv,
            ),
            (Some(kv(&["HyperVLayered"], None)), GateState::PerPod),
            (
                Some(kv(&["Snapshot", "HyperVL1VH"], None)),
                GateState::PerPod,
            ),
            (
                Some(kv(
                    &["HyperVLayered", "ConfigurableHypervisor"],
                    Some("hyperv-direct"),
                )),
                GateState::ClusterMshv,
            ),
            (
                Some(
                    json!({"spec": {"configuration": {"developerConfiguration": {"featureGates": "HyperVLayered"}}}}),
                ),
                GateState::Off,
            ),
        ];
        for (cr, want) in cases {
            assert_eq!(gate_from_kubevirt(cr.as_ref(), &s), want, "{cr:?}");
        }
    }

    #[test]
    fn disabled_and_off_gates_leave_the_pod_alone_without_node_lookups() {
        let mut s = Settings::default();
        s.gate.mode = GateMode::Disabled;
        let mut f = Scripted::default();
        assert_eq!(decide(&s, &launcher(), &mut f), Verdict::Unchanged);
        assert!(f.asked.is_empty());

        let mut f = Scripted {
            kubevirt: Some(Ok(Some(kv(&[], None)))),
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
        l.hypervisor_flag = HypervisorFlag::Separate(3);
    }

    fn mixed(l: &mut Launcher, s: &mut Settings) {
        flagged(l);
        s.mixed_mode = true;
    }

    /// Every per-Pod row of the README's decision table: the launcher/settings tweak, how many
    /// capable nodes, the VMI's workload verdict, then the expected hypervisor, reason, device
    /// edit and lookups (in order).
    #[rstest]
    #[case::selected(|_: &mut Launcher, _: &mut Settings| {}, 2, None, Hypervisor::Mshv, Reason::Selected, Some(DeviceEdit::Replace), &["nodes"])]
    #[case::no_capable_node(|_: &mut Launcher, _: &mut Settings| {}, 0, None, Hypervisor::Kvm, Reason::NoCapableNode, None, &["nodes"])]
    #[case::opt_out(|l: &mut Launcher, _: &mut Settings| l.opt_out = true, 2, None, Hypervisor::Kvm, Reason::OptOut, None, &[])]
    #[case::incompatible_device(|l: &mut Launcher, _: &mut Settings| l.incompatible = Some("devices.kubevirt.io/sev".into()), 2, None,
        Hypervisor::Kvm, Reason::IncompatibleDevice, None, &[])]
    #[case::launcher_pins_kvm(|l: &mut Launcher, _: &mut Settings| flagged(l), 2, None, Hypervisor::Kvm, Reason::LauncherPinsKvm, None, &[])]
    #[case::unlisted_image(|l: &mut Launcher, _: &mut Settings| l.image = "quay.io/kubevirt/virt-launcher:v1.8.2".into(), 2, None,
        Hypervisor::Kvm, Reason::LauncherImage, None, &[])]
    #[case::no_image(|l: &mut Launcher, _: &mut Settings| l.image.clear(), 2, None, Hypervisor::Kvm, Reason::LauncherImage, None, &[])]
    #[case::per_pod_hypervisor(|l: &mut Launcher, s: &mut Settings| { flagged(l); s.per_pod_hypervisor = true }, 2, None,
        Hypervisor::Mshv, Reason::Selected, Some(DeviceEdit::Replace), &["nodes"])]
    #[case::per_pod_hypervisor_joined_no_node(
        |l: &mut Launcher, s: &mut Settings| { l.hypervisor_flag = HypervisorFlag::Joined(3); s.per_pod_hypervisor = true }, 0, None,
        Hypervisor::Kvm, Reason::NoCapableNode, None, &["nodes"])]
    #[case::mixed_selected(mixed, 2, None, Hypervisor::Mshv, Reason::Selected, Some(DeviceEdit::Add), &["nodes"])]
    #[case::mixed_no_node(mixed, 0, None, Hypervisor::Kvm, Reason::NoCapableNode, None, &["nodes"])]
    #[case::mixed_unlisted_image(|l: &mut Launcher, s: &mut Settings| { mixed(l, s); l.image = "quay.io/kubevirt/virt-launcher:v1.9.0".into() },
        2, None, Hypervisor::Kvm, Reason::LauncherImage, None, &[])]
    #[case::mixed_realtime(|l: &mut Launcher, s: &mut Settings| { mixed(l, s); l.realtime = true; l.dedicated_cpus = true }, 2, None,
        Hypervisor::Kvm, Reason::WorkloadUnsupported, None, &[])]
    #[case::mixed_dedicated_isolated(|l: &mut Launcher, s: &mut Settings| { mixed(l, s); l.dedicated_cpus = true }, 2,
        Some("dedicated CPUs with isolateEmulatorThread"),
        Hypervisor::Kvm, Reason::WorkloadUnsupported, None, &["workload"])]
    #[case::mixed_dedicated_fine(|l: &mut Launcher, s: &mut Settings| { mixed(l, s); l.dedicated_cpus = true }, 2, None,
        Hypervisor::Mshv, Reason::Selected, Some(DeviceEdit::Add), &["workload", "nodes"])]
    #[case::fork_launcher_ignores_mixed(|_: &mut Launcher, s: &mut Settings| s.mixed_mode = true, 2, None,
        Hypervisor::Mshv, Reason::Selected, Some(DeviceEdit::Replace), &["nodes"])]
    #[case::realtime_outside_mixed_is_not_read(|l: &mut Launcher, _: &mut Settings| l.realtime = true, 2, None,
        Hypervisor::Mshv, Reason::Selected, Some(DeviceEdit::Replace), &["nodes"])]
    #[allow(clippy::too_many_arguments)]
    fn per_pod_rows(
        #[case] tweak: Tweak,
        #[case] capable: usize,
        #[case] workload: Option<&'static str>,
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
            reason != Reason::LauncherImage,
            "{:?}",
            d.warnings
        );
        assert_eq!(f.asked, asked);
    }

    #[test]
    fn the_workload_rule_reads_the_vmi() {
        let cpu = |c: Value| json!({"spec": {"domain": {"cpu": c}}});
        assert_eq!(
            unsupported_workload(&cpu(
                json!({"dedicatedCpuPlacement": true, "isolateEmulatorThread": true})
            )),
            Some("dedicated CPUs with isolateEmulatorThread")
        );
        assert_eq!(
            unsupported_workload(&cpu(json!({"dedicatedCpuPlacement": true, "realtime": {}}))),
            Some("realtime")
        );
        for fine in [
            cpu(json!({"dedicatedCpuPlacement": true})),
            cpu(json!({"isolateEmulatorThread": true})),
            cpu(json!({"dedicatedCpuPlacement": true, "realtime": null})),
            cpu(json!({"dedicatedCpuPlacement": "true", "isolateEmulatorThread": "yes"})),
            json!({}),
            json!(null),
        ] {
            assert_eq!(unsupported_workload(&fine), None, "{fine}");
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
        assert!(d.warnings.is_empty());

        let mut f = Scripted {
            source: Some(Ok(Some(Hypervisor::Mshv))),
            nodes: nodes(0),
            ..Default::default()
        };
        let d = decided(decide(&s, &l, &mut f));
        assert!(d.switch.is_some());
        assert!(d.warnings[0].contains("stays Pending"), "{:?}", d.warnings);

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
        assert_eq!((d.reason, d.switch), (Reason::LauncherImage, None));
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
        let cr = Some(Ok(Some(kv(
            &["ConfigurableHypervisor"],
            Some("hyperv-direct"),
        ))));
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
                (Hypervisor::Mshv, Reason::LauncherImage, None, true)
            );
            assert_eq!(d.warnings.len(), warnings, "{:?}", d.warnings);
            assert!(
                d.warnings
                    .last()
                    .unwrap()
                    .contains("registry.example/kv/virt-launcher")
            );
            assert!(d.warnings.last().unwrap().contains("libvirt >= 11.10"));
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
            Verdict::Reject(m) => assert!(m.contains("ns/vm") && m.contains("boom"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
