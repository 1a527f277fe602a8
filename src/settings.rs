//! Policy settings: their shape, defaults and validation.
//!
//! Every field is camelCase, unknown fields are rejected, and every invalid value is reported with
//! the dotted path of the field that holds it, so an operator reading `kubectl describe` on the
//! ClusterAdmissionPolicy knows what to fix.

#[cfg(test)]
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::images;
use crate::memory::MshvTerms;
use vocab::names as k8s_names;

/// The service account KubeVirt's virt-controller creates launcher Pods with: the `kubevirt`
/// namespace and the `kubevirt-controller` ServiceAccount of kubevirt/kubevirt
/// `pkg/virt-operator/resource/generate/rbac/controller.go`.
pub const DEFAULT_TRUSTED_CREATOR: &str = "system:serviceaccount:kubevirt:kubevirt-controller";
/// The label mshv-node-agent sets on nodes it verified (defined once, in the vocab crate the
/// agent uses too).
pub const DEFAULT_NODE_LABEL: &str = vocab::CAPABLE_NODE_LABEL;
pub const DEFAULT_DEVICE_RESOURCE: &str = vocab::MSHV_DEVICE_RESOURCE;
pub const DEFAULT_KVM_DEVICE_RESOURCE: &str = vocab::KVM_DEVICE_RESOURCE;
/// The value KubeVirt v1.8+ passes after `--hypervisor` for `/dev/mshv`
/// (kubevirt/kubevirt `pkg/virt-controller/services/template.go:472` at v1.9.0, with
/// `v1.HyperVDirectHypervisorName`).
pub const DEFAULT_HYPERVISOR_ARG: &str = "hyperv-direct";

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[cfg_attr(test, derive(JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Settings {
    /// When the policy acts at all.
    pub gate: Gate,
    /// `userInfo.username` values allowed to create launcher Pods that get mshv.
    pub trusted_creators: Vec<String>,
    /// Node label (value `true`) marking nodes verified by mshv-node-agent.
    pub node_label: String,
    /// Extended resource that hands `/dev/mshv` to the launcher.
    pub device_resource: String,
    /// Extended resource that hands `/dev/kvm` to the launcher: replaced by `deviceResource`
    /// for fork launchers and with `perPodHypervisor`, kept beside it in `mixedMode`.
    pub kvm_device_resource: String,
    /// Value written after the launcher's `--hypervisor` flag.
    pub hypervisor_arg: String,
    /// Declares that virt-handler serves both `/dev/kvm` and `/dev/mshv`, so a launcher that takes
    /// `--hypervisor` may be switched per Pod.
    pub per_pod_hypervisor: bool,
    /// Mixed clusters on released KubeVirt (v1.8+) configured for KVM, with mshv-node-agent
    /// serving `deviceResource`: a launcher that takes `--hypervisor` keeps the KVM device
    /// (virt-handler chowns `/dev/kvm` and allows it in the device cgroup, and fails the VM
    /// when it is missing) and gets the mshv device added.
    pub mixed_mode: bool,
    /// Launcher images known to run an mshv domain (their QEMU lists the mshv accelerator and
    /// their libvirt has the `hyperv` virt type, see docs/install.md): exact references, repositories (any tag
    /// or digest) or prefixes ending in `*`. Only launchers whose compute image matches are
    /// switched to mshv.
    pub launcher_images: Vec<String>,
    /// Count a node as capable only when `status.allocatable[deviceResource] > 0`.
    pub require_allocatable: bool,
    /// Extended resources that mshv cannot serve: a launcher requesting one stays on KVM.
    pub incompatible_resources: Vec<String>,
    /// What to do when a cluster lookup fails.
    pub on_lookup_error: OnLookupError,
    /// Memory overhead added for mshv VMs on top of KubeVirt's own.
    pub memory_overhead: MemoryOverhead,
    /// VMs that must stay live-migratable, and so stay on KVM.
    pub live_migration: LiveMigration,
}

/// A running mshv VM cannot be live-migrated (QEMU's mshv accelerator has no dirty-page
/// logging), so VMs whose eviction strategy asks for live migration stay on KVM.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[cfg_attr(test, derive(JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LiveMigration {
    /// Eviction strategies whose VMs stay on KVM (reason `needs-live-migration`): the VMI's
    /// `spec.evictionStrategy`, else the KubeVirt CR's `spec.configuration.evictionStrategy`.
    /// An empty list turns the rule, and the VMI read it needs, off.
    ///
    /// The default keeps `LiveMigrateIfPossible` too: KubeVirt never marks an mshv VMI
    /// non-migratable (kubevirt/kubevirt@v1.9.0 pkg/virt-controller/watch/vmi/vm.go:1247 sets
    /// `LiveMigratable` without regard to the hypervisor), so for it `LiveMigrateIfPossible`
    /// behaves as `LiveMigrate`: the eviction is answered 429 and a migration is tried and
    /// retried (pkg/virt-api/webhooks/validating-webhook/admitters/pod-eviction-admitter.go:147-155)
    /// and the drain blocks, rather than the VM being shut down.
    pub keep_on_kvm: Vec<EvictionStrategy>,
}

impl Default for LiveMigration {
    fn default() -> Self {
        LiveMigration {
            keep_on_kvm: vec![
                EvictionStrategy::LiveMigrate,
                EvictionStrategy::LiveMigrateIfPossible,
            ],
        }
    }
}

/// KubeVirt's eviction strategies (kubevirt/kubevirt@d923fdb8
/// staging/src/kubevirt.io/api/core/v1/types.go `EvictionStrategy*`), spelled as KubeVirt
/// spells them.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(test, derive(JsonSchema))]
pub enum EvictionStrategy {
    /// A drain live-migrates the VM and waits for the migration.
    LiveMigrate,
    /// A drain live-migrates the VM when KubeVirt deems it migratable, else evicts it.
    LiveMigrateIfPossible,
    /// A drain is left to an external controller (which migrates or stops the VM).
    External,
    /// A drain evicts (stops) the VM.
    None,
}

impl EvictionStrategy {
    pub const ALL: [EvictionStrategy; 4] = [
        EvictionStrategy::LiveMigrate,
        EvictionStrategy::LiveMigrateIfPossible,
        EvictionStrategy::External,
        EvictionStrategy::None,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EvictionStrategy::LiveMigrate => "LiveMigrate",
            EvictionStrategy::LiveMigrateIfPossible => "LiveMigrateIfPossible",
            EvictionStrategy::External => "External",
            EvictionStrategy::None => "None",
        }
    }

    /// The strategy a VMI or KubeVirt CR names, `None` for a name KubeVirt does not define.
    pub fn from_api(name: &str) -> Option<EvictionStrategy> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[cfg_attr(test, derive(JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Gate {
    pub mode: GateMode,
    /// In `kubevirt` mode: any of these KubeVirt feature gates turns per-Pod selection on.
    pub feature_gates: Vec<String>,
    /// In `kubevirt` mode (and for the memory terms): the KubeVirt CR to read.
    pub kubevirt: KubeVirtRef,
}

/// Where the KubeVirt CR is: read with a GET (fails fast when it is missing or forbidden).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[cfg_attr(test, derive(JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct KubeVirtRef {
    /// `kubevirt` for a plain install; `kubevirt-hyperconverged` or `openshift-cnv` with HCO.
    pub namespace: String,
    /// `kubevirt` for a plain install; `kubevirt-kubevirt-hyperconverged` with HCO.
    pub name: String,
}

impl Default for KubeVirtRef {
    fn default() -> Self {
        KubeVirtRef {
            namespace: "kubevirt".to_string(),
            name: "kubevirt".to_string(),
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(test, derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum GateMode {
    /// Read the KubeVirt CR to learn whether mshv is on, cluster-wide or per Pod.
    #[default]
    Kubevirt,
    /// Per-Pod selection, without reading the KubeVirt CR.
    Enabled,
    /// Do nothing.
    Disabled,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(test, derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum OnLookupError {
    /// Leave the Pod on KVM as rendered, record `lookup-error` and warn.
    #[default]
    Fallback,
    /// Reject the Pod with a message; virt-controller retries the creation.
    Reject,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[cfg_attr(test, derive(JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MemoryOverhead {
    pub mshv: MshvOverhead,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[cfg_attr(test, derive(JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MshvOverhead {
    /// Kubernetes quantity added per VM.
    pub fixed: String,
    /// Kubernetes quantity added per vCPU.
    pub per_vcpu: String,
    /// Decimal percentage (0–100) of the guest memory.
    pub guest_memory_percent: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            gate: Gate::default(),
            trusted_creators: vec![DEFAULT_TRUSTED_CREATOR.to_string()],
            node_label: DEFAULT_NODE_LABEL.to_string(),
            device_resource: DEFAULT_DEVICE_RESOURCE.to_string(),
            kvm_device_resource: DEFAULT_KVM_DEVICE_RESOURCE.to_string(),
            hypervisor_arg: DEFAULT_HYPERVISOR_ARG.to_string(),
            per_pod_hypervisor: false,
            mixed_mode: false,
            launcher_images: Vec::new(),
            require_allocatable: true,
            incompatible_resources: vec![
                "devices.kubevirt.io/sev".to_string(),
                "devices.kubevirt.io/tdx".to_string(),
            ],
            on_lookup_error: OnLookupError::default(),
            memory_overhead: MemoryOverhead::default(),
            live_migration: LiveMigration::default(),
        }
    }
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            mode: GateMode::default(),
            // The names the Microsoft fork builds use; upstream never shipped them (no such gate
            // in kubevirt/kubevirt `pkg/virt-config/featuregate/active.go` up to v1.9.0).
            feature_gates: vec!["HyperVLayered".to_string(), "HyperVL1VH".to_string()],
            kubevirt: KubeVirtRef::default(),
        }
    }
}

impl Default for MshvOverhead {
    fn default() -> Self {
        MshvOverhead {
            fixed: "0".to_string(),
            per_vcpu: "0".to_string(),
            guest_memory_percent: "0".to_string(),
        }
    }
}

/// An invalid setting: the dotted field path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("settings field `{field}`: {message}")]
pub struct SettingsError {
    pub field: String,
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> SettingsError {
    SettingsError {
        field: field.into(),
        message: message.into(),
    }
}

impl Settings {
    /// Parses settings JSON, reporting the path of the first field that does not deserialize.
    pub fn from_json(raw: &[u8]) -> Result<Settings, SettingsError> {
        let start = raw.iter().find(|b| !b.is_ascii_whitespace());
        if raw.trim_ascii() == b"null" {
            // Some hosts send `null` for a policy without settings.
            return Ok(Settings::default());
        }
        if start != Some(&b'{') {
            return Err(invalid("(root)", "settings must be a JSON object"));
        }
        // The plain parse is the common case (every admission request carries the settings);
        // only a failure pays for tracking the path of the field at fault.
        let settings = match serde_json::from_slice::<Settings>(raw) {
            Ok(s) => s,
            Err(_) => Self::path_of_error(raw)?,
        };
        settings.validate()?;
        Ok(settings)
    }

    fn path_of_error(raw: &[u8]) -> Result<Settings, SettingsError> {
        let de = &mut serde_json::Deserializer::from_slice(raw);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." || path.is_empty() {
                "(root)".to_string()
            } else {
                path
            };
            invalid(field, e.into_inner().to_string())
        })
    }

    /// Checks every field; the first problem found is returned.
    pub fn validate(&self) -> Result<(), SettingsError> {
        for (i, g) in self.gate.feature_gates.iter().enumerate() {
            if g.is_empty() || g.len() > 128 || !g.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(invalid(
                    format!("gate.featureGates[{i}]"),
                    format!("{g:?} is not a KubeVirt feature gate name (ASCII letters and digits)"),
                ));
            }
        }
        k8s_names::check_object_name(&self.gate.kubevirt.namespace)
            .map_err(|m| invalid("gate.kubevirt.namespace", m))?;
        k8s_names::check_object_name(&self.gate.kubevirt.name)
            .map_err(|m| invalid("gate.kubevirt.name", m))?;
        if self.trusted_creators.is_empty() {
            return Err(invalid(
                "trustedCreators",
                "must name at least one user (virt-controller's service account); an empty list would make the policy a no-op",
            ));
        }
        for (i, c) in self.trusted_creators.iter().enumerate() {
            if c.trim().is_empty() || c.trim() != c {
                return Err(invalid(
                    format!("trustedCreators[{i}]"),
                    format!("{c:?} is not a user name"),
                ));
            }
        }
        k8s_names::check_label_key(&self.node_label).map_err(|m| invalid("nodeLabel", m))?;
        k8s_names::check_extended_resource(&self.device_resource)
            .map_err(|m| invalid("deviceResource", m))?;
        k8s_names::check_extended_resource(&self.kvm_device_resource)
            .map_err(|m| invalid("kvmDeviceResource", m))?;
        if self.device_resource == self.kvm_device_resource {
            return Err(invalid(
                "kvmDeviceResource",
                "must differ from deviceResource",
            ));
        }
        for (i, r) in self.incompatible_resources.iter().enumerate() {
            k8s_names::check_extended_resource(r)
                .map_err(|m| invalid(format!("incompatibleResources[{i}]"), m))?;
        }
        if self.hypervisor_arg.is_empty()
            || self.hypervisor_arg.len() > 63
            || !self
                .hypervisor_arg
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(invalid(
                "hypervisorArg",
                format!(
                    "{:?} is not a hypervisor name (1-63 characters of a-z, 0-9, '-')",
                    self.hypervisor_arg
                ),
            ));
        }
        for (i, p) in self.launcher_images.iter().enumerate() {
            images::check_pattern(p)
                .map_err(|e| invalid(format!("launcherImages[{i}]"), e.to_string()))?;
        }
        if self.mixed_mode && self.per_pod_hypervisor {
            return Err(invalid(
                "mixedMode",
                "cannot be combined with perPodHypervisor: mixed mode keeps the KVM device for \
                 virt-handler of a KVM-configured KubeVirt, perPodHypervisor replaces it",
            ));
        }
        if self.mixed_mode && self.launcher_images.is_empty() {
            return Err(invalid(
                "launcherImages",
                "mixedMode needs at least one launcher image known to run mshv (its QEMU lists the \
                 mshv accelerator and its libvirt has the hyperv virt type); stock KubeVirt v1.8/v1.9 \
                 launcher images cannot, and with no image listed nothing would be switched",
            ));
        }
        self.mshv_terms()?;
        Ok(())
    }

    /// The validated mshv memory terms.
    pub fn mshv_terms(&self) -> Result<MshvTerms, SettingsError> {
        let m = &self.memory_overhead.mshv;
        MshvTerms::parse(&m.fixed, &m.per_vcpu, &m.guest_memory_percent)
            .map_err(|e| invalid(format!("memoryOverhead.mshv.{}", e.field()), e.to_string()))
    }
}

/// JSON Schema of the settings, for docs and editors (kept in `docs/settings.schema.json` by
/// `make schema`; schemars is only a dev-dependency: the module does not carry it).
#[cfg(test)]
pub fn schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Settings)).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    fn err(v: serde_json::Value) -> SettingsError {
        match Settings::from_json(v.to_string().as_bytes()) {
            Ok(s) => panic!("accepted invalid settings: {s:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn empty_object_gives_documented_defaults() {
        let s = Settings::from_json(b"{}").unwrap();
        assert_eq!(s, Settings::default());
        assert_eq!(s.gate.mode, GateMode::Kubevirt);
        assert_eq!(s.gate.feature_gates, ["HyperVLayered", "HyperVL1VH"]);
        assert_eq!(s.node_label, "mshv.node.hyperv-layered.io/capable");
        assert_eq!(s.device_resource, "devices.kubevirt.io/mshv");
        assert_eq!(s.kvm_device_resource, "devices.kubevirt.io/kvm");
        assert_eq!(s.hypervisor_arg, "hyperv-direct");
        assert!(!s.per_pod_hypervisor);
        assert!(!s.mixed_mode);
        assert!(s.launcher_images.is_empty());
        assert!(s.require_allocatable);
        assert_eq!(s.on_lookup_error, OnLookupError::Fallback);
        assert!(s.mshv_terms().unwrap().is_zero());
        assert_eq!(
            s.live_migration.keep_on_kvm,
            [
                EvictionStrategy::LiveMigrate,
                EvictionStrategy::LiveMigrateIfPossible
            ]
        );
    }

    #[test]
    fn full_settings_round_trip() {
        let v = json!({
            "gate": {"mode": "enabled", "featureGates": ["HyperVLayered"],
                     "kubevirt": {"namespace": "openshift-cnv", "name": "kubevirt-kubevirt-hyperconverged"}},
            "trustedCreators": ["system:serviceaccount:kv:kubevirt-controller"],
            "nodeLabel": "example.com/mshv",
            "deviceResource": "example.com/mshv",
            "kvmDeviceResource": "example.com/kvm",
            "hypervisorArg": "mshv",
            "perPodHypervisor": true,
            "mixedMode": false,
            "launcherImages": ["registry.example/kv/virt-launcher"],
            "requireAllocatable": false,
            "incompatibleResources": [],
            "onLookupError": "reject",
            "memoryOverhead": {"mshv": {"fixed": "64Mi", "perVcpu": "2Mi", "guestMemoryPercent": "1.5"}},
            "liveMigration": {"keepOnKvm": ["LiveMigrate", "LiveMigrateIfPossible", "External", "None"]}
        });
        let s = Settings::from_json(v.to_string().as_bytes()).unwrap();
        assert_eq!(s.gate.mode, GateMode::Enabled);
        assert_eq!(s.on_lookup_error, OnLookupError::Reject);
        assert_eq!(serde_json::to_value(&s).unwrap(), v);
        let t = s.mshv_terms().unwrap();
        assert_eq!(t.fixed, 64 << 20);
        assert_eq!(t.per_vcpu, 2 << 20);
    }

    /// Every invalid value is refused with the dotted path of its field.
    #[rstest]
    #[case::bogus(json!({"bogus": 1}), "bogus")]
    #[case::gate_mode(json!({"gate": {"mode": "sometimes"}}), "gate.mode")]
    #[case::root(json!({"gate": {"featureGates": ["Hyper V"]}}), "gate.featureGates[0]", )]
    #[case::root_2(json!({"gate": {"featureGates": "HyperVLayered"}}), "gate.featureGates", )]
    #[case::gate_extra(json!({"gate": {"extra": true}}), "gate.extra")]
    #[case::root_3(json!({"gate": {"kubevirt": {"namespace": "Kube Virt"}}}), "gate.kubevirt.namespace", )]
    #[case::root_4(json!({"gate": {"kubevirt": {"name": ""}}}), "gate.kubevirt.name", )]
    #[case::trustedcreators(json!({"trustedCreators": []}), "trustedCreators")]
    #[case::root_5(json!({"trustedCreators": ["ok", " "]}), "trustedCreators[1]", )]
    #[case::nodelabel(json!({"nodeLabel": "Bad Label"}), "nodeLabel")]
    #[case::nodelabel_2(json!({"nodeLabel": 7}), "nodeLabel")]
    #[case::deviceresource(json!({"deviceResource": "mshv"}), "deviceResource")]
    #[case::root_6(json!({"deviceResource": "kubernetes.io/mshv"}), "deviceResource", )]
    #[case::root_7(json!({"kvmDeviceResource": "devices.kubevirt.io/mshv"}), "kvmDeviceResource", )]
    #[case::root_8(json!({"incompatibleResources": ["ok.io/a", "no"]}), "incompatibleResources[1]", )]
    #[case::hypervisorarg(json!({"hypervisorArg": ""}), "hypervisorArg")]
    #[case::hypervisorarg_2(json!({"hypervisorArg": "Hyper V"}), "hypervisorArg")]
    #[case::perpodhypervisor(json!({"perPodHypervisor": "yes"}), "perPodHypervisor")]
    #[case::mixedmode(json!({"mixedMode": "yes"}), "mixedMode")]
    #[case::launcherimages(json!({"mixedMode": true}), "launcherImages")]
    #[case::root_9(json!({"mixedMode": true, "perPodHypervisor": true, "launcherImages": ["r.io/l"]}), "mixedMode", )]
    #[case::launcherimages_2(json!({"launcherImages": "r.io/l"}), "launcherImages")]
    #[case::root_10(json!({"launcherImages": ["r.io/l", "*"]}), "launcherImages[1]", )]
    #[case::requireallocatable(json!({"requireAllocatable": 1}), "requireAllocatable")]
    #[case::onlookuperror(json!({"onLookupError": "ignore"}), "onLookupError")]
    #[case::root_11(json!({"memoryOverhead": {"mshv": {"fixed": "lots"}}}), "memoryOverhead.mshv.fixed", )]
    #[case::root_12(json!({"memoryOverhead": {"mshv": {"perVcpu": "-1Mi"}}}), "memoryOverhead.mshv.perVcpu", )]
    #[case::root_13(json!({"memoryOverhead": {"mshv": {"guestMemoryPercent": "101"}}}), "memoryOverhead.mshv.guestMemoryPercent", )]
    #[case::memoryoverhead_kvm(json!({"memoryOverhead": {"kvm": {}}}), "memoryOverhead.kvm")]
    #[case::keep_on_kvm_value(json!({"liveMigration": {"keepOnKvm": ["LiveMigrate", "livemigrate"]}}), "liveMigration.keepOnKvm[1]")]
    #[case::keep_on_kvm_type(json!({"liveMigration": {"keepOnKvm": "LiveMigrate"}}), "liveMigration.keepOnKvm")]
    #[case::live_migration_extra(json!({"liveMigration": {"keep": []}}), "liveMigration.keep")]
    fn every_invalid_field_is_named(#[case] v: serde_json::Value, #[case] field: &str) {
        let e = err(v.clone());
        assert_eq!(e.field, field, "{v} gave {e}");
        assert!(e.to_string().contains(field), "{e}");
    }

    #[test]
    fn non_object_settings_are_rejected_not_panicking() {
        for raw in [
            &b"[]"[..],
            b"\"x\"",
            b"",
            b"{",
            b"1e999",
            b"{\"gate\": null}",
        ] {
            assert!(
                Settings::from_json(raw).is_err(),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        assert_eq!(Settings::from_json(b" null ").unwrap(), Settings::default());
    }

    /// The committed schema must match the type; `make schema` rewrites it.
    #[test]
    fn schema_file_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/settings.schema.json");
        let want = serde_json::to_string_pretty(&schema()).unwrap() + "\n";
        if std::env::var_os("UPDATE_SCHEMA").is_some() {
            std::fs::write(path, &want).unwrap();
        }
        let have = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            have == want,
            "docs/settings.schema.json is stale: run `make schema`"
        );
    }

    /// Every field of the settings, as `Settings::default()` serializes it, is a property of
    /// the schema at the same place (the schema file test above only checks that the file is
    /// what schemars writes, not that schemars saw every field).
    #[test]
    fn schema_describes_every_setting() {
        let schema = schema();
        let defaults = serde_json::to_value(Settings::default()).unwrap();
        fn walk(
            schema: &serde_json::Value,
            root: &serde_json::Value,
            value: &serde_json::Value,
            path: &str,
        ) {
            let Some(fields) = value.as_object() else {
                return;
            };
            // A nested struct is a `$ref` into the schema's definitions.
            let node = match schema.get("$ref").and_then(|r| r.as_str()) {
                Some(r) => root
                    .pointer(r.trim_start_matches('#'))
                    .unwrap_or_else(|| panic!("{path}: dangling {r}")),
                None => schema,
            };
            let props = node
                .get("properties")
                .and_then(|p| p.as_object())
                .unwrap_or_else(|| panic!("{path}: no properties in {node}"));
            assert_eq!(
                props.keys().collect::<std::collections::BTreeSet<_>>(),
                fields.keys().collect::<std::collections::BTreeSet<_>>(),
                "{path}: schema properties differ from the settings' fields"
            );
            for (k, v) in fields {
                walk(&props[k], root, v, &format!("{path}.{k}"));
            }
        }
        walk(&schema, &schema, &defaults, "(root)");
    }
}
