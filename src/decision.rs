//! The decision: kvm or mshv for one launcher Pod, and why.
//!
//! Pure logic over the [`Facts`] port; the cluster lookups behind it are made lazily, only when
//! a rule needs them, so cheap rules (opt-out, devices, launcher flag) never cost a host call.
//!
//! Why per-Pod mshv needs care: virt-handler serves, chowns and allows in the device cgroup only
//! the `/dev/<device>` of the cluster-wide hypervisor (kubevirt.md §1). A launcher that takes
//! `--hypervisor` on a KVM-configured cluster would get no usable `/dev/mshv`, so such a launcher
//! is switched only when `perPodHypervisor: true` says the cluster serves both devices.

use serde_json::Value;

use crate::cluster::LookupError;
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

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The hypervisor the VM will run on.
    pub hypervisor: Hypervisor,
    pub reason: Reason,
    /// Rewrite the compute container for mshv (device resource and `--hypervisor`).
    pub switch_to_mshv: bool,
    /// AND the capable-node requirement into the Pod's node affinity.
    pub require_capable_node: bool,
    pub warnings: Vec<String>,
}

impl Decision {
    fn keep(launcher: &Launcher, reason: Reason) -> Decision {
        Decision {
            hypervisor: launcher.rendered,
            reason,
            switch_to_mshv: false,
            require_capable_node: false,
            warnings: Vec::new(),
        }
    }

    fn mshv(reason: Reason) -> Decision {
        Decision {
            hypervisor: Hypervisor::Mshv,
            reason,
            switch_to_mshv: true,
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
            Verdict::Decided(d)
        }
    }
}

fn decide_per_pod(settings: &Settings, launcher: &Launcher, facts: &mut dyn Facts) -> Verdict {
    // A live migration cannot cross hypervisors: the target follows its source whatever the
    // other rules would say today.
    if launcher.migration_job.is_some() {
        return match facts.migration_source(launcher) {
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
                let d = Decision::mshv(Reason::MigrationSourceMshv);
                match facts.has_capable_node() {
                    Ok(false) => {
                        Verdict::Decided(d.warn(no_capable_node_warning(settings, launcher)))
                    }
                    Ok(true) => Verdict::Decided(d),
                    // The target must be mshv either way; the node list only fed a warning.
                    Err(e) => Verdict::Decided(d.warn(format!("hyperv-layered: {e}"))),
                }
            }
        };
    }
    if launcher.opt_out {
        return Verdict::Decided(Decision::keep(launcher, Reason::OptOut));
    }
    if launcher.incompatible.is_some() {
        return Verdict::Decided(Decision::keep(launcher, Reason::IncompatibleDevice));
    }
    if launcher.hypervisor_flag != HypervisorFlag::Absent && !settings.per_pod_hypervisor {
        return Verdict::Decided(Decision::keep(launcher, Reason::LauncherPinsKvm));
    }
    match facts.has_capable_node() {
        Err(e) => on_lookup_error(settings, launcher, &e),
        Ok(false) => Verdict::Decided(Decision::keep(launcher, Reason::NoCapableNode)),
        Ok(true) => Verdict::Decided(Decision::mshv(Reason::Selected)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Default)]
    struct Scripted {
        kubevirt: Option<Result<Option<Value>, LookupError>>,
        nodes: Option<Result<bool, LookupError>>,
        source: Option<Result<Option<Hypervisor>, LookupError>>,
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
    }

    fn launcher() -> Launcher {
        Launcher {
            compute: 0,
            namespace: "ns".into(),
            vmi_name: "vm".into(),
            vmi_uid: "uid".into(),
            migration_job: None,
            hypervisor_flag: HypervisorFlag::Absent,
            rendered: Hypervisor::Kvm,
            incompatible: None,
            opt_out: false,
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

    #[test]
    fn per_pod_rows() {
        // (name, launcher/settings tweak, nodes, expected hypervisor, reason, switch, lookups)
        type Tweak = fn(&mut Launcher, &mut Settings);
        type Row = (
            &'static str,
            Tweak,
            usize,
            Hypervisor,
            Reason,
            bool,
            &'static [&'static str],
        );
        let rows: [Row; 7] = [
            (
                "selected",
                |_, _| {},
                2,
                Hypervisor::Mshv,
                Reason::Selected,
                true,
                &["nodes"],
            ),
            (
                "no capable node",
                |_, _| {},
                0,
                Hypervisor::Kvm,
                Reason::NoCapableNode,
                false,
                &["nodes"],
            ),
            (
                "opt-out",
                |l, _| l.opt_out = true,
                2,
                Hypervisor::Kvm,
                Reason::OptOut,
                false,
                &[],
            ),
            (
                "incompatible device",
                |l, _| l.incompatible = Some("devices.kubevirt.io/sev".into()),
                2,
                Hypervisor::Kvm,
                Reason::IncompatibleDevice,
                false,
                &[],
            ),
            (
                "launcher pins kvm",
                |l, _| l.hypervisor_flag = HypervisorFlag::Separate(3),
                2,
                Hypervisor::Kvm,
                Reason::LauncherPinsKvm,
                false,
                &[],
            ),
            (
                "launcher flag with perPodHypervisor",
                |l, s| {
                    l.hypervisor_flag = HypervisorFlag::Separate(3);
                    s.per_pod_hypervisor = true
                },
                2,
                Hypervisor::Mshv,
                Reason::Selected,
                true,
                &["nodes"],
            ),
            (
                "joined flag with perPodHypervisor but no node",
                |l, s| {
                    l.hypervisor_flag = HypervisorFlag::Joined(3);
                    s.per_pod_hypervisor = true
                },
                0,
                Hypervisor::Kvm,
                Reason::NoCapableNode,
                false,
                &["nodes"],
            ),
        ];
        for (name, tweak, n, hv, reason, switch, asked) in rows {
            let (mut l, mut s) = (launcher(), enabled());
            tweak(&mut l, &mut s);
            let mut f = Scripted {
                nodes: nodes(n),
                ..Default::default()
            };
            let d = decided(decide(&s, &l, &mut f));
            assert_eq!(
                (d.hypervisor, d.reason, d.switch_to_mshv),
                (hv, reason, switch),
                "{name}"
            );
            assert_eq!(d.require_capable_node, switch, "{name}");
            assert!(d.warnings.is_empty(), "{name}");
            assert_eq!(f.asked, asked, "{name}");
        }
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
            (d.hypervisor, d.reason, d.switch_to_mshv),
            (Hypervisor::Mshv, Reason::MigrationSourceMshv, true)
        );
        assert!(d.warnings.is_empty());

        let mut f = Scripted {
            source: Some(Ok(Some(Hypervisor::Mshv))),
            nodes: nodes(0),
            ..Default::default()
        };
        let d = decided(decide(&s, &l, &mut f));
        assert!(d.switch_to_mshv);
        assert!(d.warnings[0].contains("stays Pending"), "{:?}", d.warnings);

        let mut f = Scripted {
            source: Some(Ok(Some(Hypervisor::Kvm))),
            ..Default::default()
        };
        let d = decided(decide(&s, &l, &mut f));
        assert_eq!(
            (d.hypervisor, d.reason, d.switch_to_mshv),
            (Hypervisor::Kvm, Reason::MigrationSourceKvm, false)
        );
        assert_eq!(f.asked, ["source"]);

        let mut f = Scripted {
            source: Some(Ok(None)),
            ..Default::default()
        };
        let d = decided(decide(&s, &l, &mut f));
        assert_eq!(d.reason, Reason::MigrationSourceUnknown);
        assert!(!d.switch_to_mshv);
        assert!(d.warnings[0].contains("ns/vm"));

        let mut f = Scripted {
            source: Some(Err(lookup_err())),
            ..Default::default()
        };
        let d = decided(decide(&s, &l, &mut f));
        assert_eq!(d.reason, Reason::LookupError);
    }

    #[test]
    fn cluster_mshv_steers_scheduling_only() {
        let mut l = launcher();
        l.rendered = Hypervisor::Mshv;
        let cr = Some(Ok(Some(kv(
            &["ConfigurableHypervisor"],
            Some("hyperv-direct"),
        ))));
        let mut f = Scripted {
            kubevirt: cr.clone(),
            nodes: nodes(3),
            ..Default::default()
        };
        let d = decided(decide(&Settings::default(), &l, &mut f));
        assert_eq!(
            (
                d.hypervisor,
                d.reason,
                d.switch_to_mshv,
                d.require_capable_node
            ),
            (Hypervisor::Mshv, Reason::ClusterMshv, false, true)
        );
        assert_eq!(f.asked, ["kubevirt", "nodes"]);

        let mut f = Scripted {
            kubevirt: cr,
            nodes: nodes(0),
            ..Default::default()
        };
        let d = decided(decide(&Settings::default(), &l, &mut f));
        assert_eq!(
            (d.reason, d.require_capable_node),
            (Reason::NoCapableNode, true)
        );
        assert!(d.warnings[0].contains("stays Pending"));
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
            (d.hypervisor, d.reason, d.switch_to_mshv),
            (Hypervisor::Kvm, Reason::LookupError, false)
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
