//! Tests of the memory model. KubeVirt's own test expectations are reproduced with the test's
//! file and name; paths are in kubevirt/kubevirt.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::memory::kubevirt::{MI, OverheadModel};

const GI: u64 = 1 << 30;

/// The VMI of `Describe("GetMemoryOverhead calculation")`'s `BeforeEach` in
/// pkg/hypervisor/kvm/hypervisorbackend_test.go: requests.memory 1Gi, empty limits, nothing else.
fn test_vmi() -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": "test-vmi"},
        "spec": {"domain": {"resources": {"requests": {"memory": "1Gi"}, "limits": {}}, "devices": {}}}
    })
}

/// Sets `v[path...] = value`, creating objects on the way.
fn set(v: &mut Value, path: &[&str], value: Value) {
    let mut cur = v;
    for key in &path[..path.len() - 1] {
        if !cur.get(*key).is_some_and(Value::is_object) {
            cur[*key] = json!({});
        }
        cur = &mut cur[*key];
    }
    cur[path[path.len() - 1]] = value;
}

fn total(vmi: &Value) -> u64 {
    total_with(vmi, &KubeVirtMemoryConfig::default())
}

fn total_with(vmi: &Value, kv: &KubeVirtMemoryConfig) -> u64 {
    match kubevirt_overhead(vmi, kv) {
        Ok(b) => b.total,
        Err(e) => panic!("overhead failed: {e}"),
    }
}

fn kv_with_ratio(r: &str) -> KubeVirtMemoryConfig {
    KubeVirtMemoryConfig {
        additional_guest_memory_overhead_ratio: Some(r.to_string()),
        ..KubeVirtMemoryConfig::default()
    }
}

// hypervisorbackend_test.go (v1.8): staticOverheadString = "223Mi" (processes 220Mi + IOThread
// 8Mi - 5Mi) and baseOverhead = "7Mi" ("MemoryReq / 512bit", 2Mi + 5Mi): together 230Mi, which
// is 2Mi page tables + 220Mi processes + 8Mi IOThread. videoRAM 32Mi, cores 8Mi per vCPU.
const BASE_1GI: u64 = 230 * MI;

#[test]
fn kv_default_vmi_is_base_static_video_and_one_vcpu() {
    // hypervisorbackend_test.go: When("the vmi is not requesting any specific device or cpu or
    // whatever") It("should return base overhead+static+8Mi").
    assert_eq!(total(&test_vmi()), BASE_1GI + 32 * MI + 8 * MI);
    // The reference's worked value: 1 vCPU, 1 GiB -> 283,115,520.
    assert_eq!(total(&test_vmi()), 283_115_520);
}

#[test]
fn worked_value_two_gib() {
    // 1 vCPU / 2 GiB: ceil(2147483648/1000)*1000/512 = 4,194,304 page tables + 268 MiB.
    let mut vmi = test_vmi();
    set(
        &mut vmi,
        &["spec", "domain", "resources", "requests", "memory"],
        json!("2Gi"),
    );
    let b = kubevirt_overhead(&vmi, &KubeVirtMemoryConfig::default()).unwrap();
    assert_eq!(b.term("pageTables"), Some(4_194_304));
    assert_eq!(b.total, 285_212_672);
    assert_eq!(2 * GI + b.total, 2_432_696_320);
}

#[test]
fn kv_topology_counts_sockets_cores_threads() {
    // hypervisorbackend_test.go: When("the vmi requests the specific cpu")
    // It("should adjust overhead based on the cores/threads/sockets"): 2x2x2 = 8 vCPUs.
    let mut vmi = test_vmi();
    set(
        &mut vmi,
        &["spec", "domain", "cpu"],
        json!({"cores": 2, "threads": 2, "sockets": 2}),
    );
    assert_eq!(total(&vmi), BASE_1GI + 32 * MI + 8 * 8 * MI);
    assert_eq!(vcpus(&vmi), 8);
}

#[test]
fn kv_cpu_resources_without_topology() {
    // hypervisorbackend_test.go: When("the vmi requests cpu resource") DescribeTable("should
    // adjust overhead"): Entry("based on the limits if both requests and limits are provided",
    // "3", "5", 5), Entry("based on the requests if only requests are provided", "3", "", 3).
    for (req, lim, n) in [("3", Some("5"), 5), ("3", None, 3)] {
        let mut vmi = test_vmi();
        set(
            &mut vmi,
            &["spec", "domain", "resources", "requests", "cpu"],
            json!(req),
        );
        if let Some(l) = lim {
            set(
                &mut vmi,
                &["spec", "domain", "resources", "limits", "cpu"],
                json!(l),
            );
        }
        assert_eq!(
            total(&vmi),
            BASE_1GI + 32 * MI + n * 8 * MI,
            "{req}/{lim:?}"
        );
        assert_eq!(vcpus(&vmi), n);
    }
}

#[test]
fn vcpus_round_up_and_default_to_one() {
    let mut vmi = test_vmi();
    assert_eq!(vcpus(&vmi), 1);
    set(
        &mut vmi,
        &["spec", "domain", "resources", "requests", "cpu"],
        json!("500m"),
    );
    assert_eq!(vcpus(&vmi), 1);
    set(
        &mut vmi,
        &["spec", "domain", "resources", "requests", "cpu"],
        json!("2500m"),
    );
    assert_eq!(vcpus(&vmi), 3);
    // A present spec.domain.cpu wins even without a topology: GetNumberOfVCPUs = 0 -> 1.
    set(
        &mut vmi,
        &["spec", "domain", "cpu"],
        json!({"model": "host-passthrough"}),
    );
    assert_eq!(vcpus(&vmi), 1);
    set(&mut vmi, &["spec", "domain", "cpu"], json!({"sockets": 4}));
    assert_eq!(vcpus(&vmi), 4);
    set(
        &mut vmi,
        &["spec", "domain", "cpu"],
        json!({"threads": 2, "sockets": 3}),
    );
    assert_eq!(vcpus(&vmi), 6);
    // uint32 arithmetic wraps as in Go: 65536 * 65536 = 2^32 -> 0 -> 1.
    set(
        &mut vmi,
        &["spec", "domain", "cpu"],
        json!({"cores": 65536, "sockets": 65536}),
    );
    assert_eq!(vcpus(&vmi), 1);
}

#[test]
fn kv_no_video_ram_when_graphics_disabled() {
    // hypervisorbackend_test.go: When("the vmi does not require auto attach graphics device")
    // It("should not add videoRAMOverhead").
    let mut vmi = test_vmi();
    set(
        &mut vmi,
        &["spec", "domain", "devices", "autoattachGraphicsDevice"],
        json!(false),
    );
    assert_eq!(total(&vmi), BASE_1GI + 8 * MI);
    set(
        &mut vmi,
        &["spec", "domain", "devices", "autoattachGraphicsDevice"],
        json!(true),
    );
    assert_eq!(total(&vmi), BASE_1GI + 32 * MI + 8 * MI);
}

#[test]
fn kv_arm64() {
    // hypervisorbackend_test.go: When("the cpu arch is arm64") It("should add arm64 overhead").
    let mut vmi = test_vmi();
    set(&mut vmi, &["spec", "architecture"], json!("arm64"));
    assert_eq!(total(&vmi), BASE_1GI + 32 * MI + 8 * MI + 128 * MI);
    // Without spec.architecture the cluster's architecture is used (CalculateMemoryOverhead).
    let arm = KubeVirtMemoryConfig {
        cluster_arch: "arm64".into(),
        ..KubeVirtMemoryConfig::default()
    };
    assert_eq!(total_with(&test_vmi(), &arm), BASE_1GI + 168 * MI);
    set(&mut vmi, &["spec", "architecture"], json!("amd64"));
    assert_eq!(total_with(&vmi, &arm), BASE_1GI + 40 * MI);
}

#[test]
fn kv_vfio() {
    // hypervisorbackend_test.go: When("the vmi requests a VFIO device") DescribeTable("should
    // add vfio overhead"): Entry("with hostDEV"), Entry("with GPU"), Entry("with SRIOV").
    for devices in [
        json!({"hostDevices": [{"name": "test"}]}),
        json!({"gpus": [{"name": "test"}]}),
        json!({"interfaces": [{"name": "test", "sriov": {}}]}),
    ] {
        let mut vmi = test_vmi();
        set(&mut vmi, &["spec", "domain", "devices"], devices.clone());
        assert_eq!(total(&vmi), BASE_1GI + 40 * MI + GI, "{devices}");
    }
    let mut vmi = test_vmi();
    set(
        &mut vmi,
        &["spec", "domain", "devices"],
        json!({"gpus": [], "interfaces": [{"name": "a", "masquerade": {}}]}),
    );
    assert_eq!(total(&vmi), BASE_1GI + 40 * MI);
}

#[test]
fn kv_downward_metrics_volume() {
    // hypervisorbackend_test.go: When("the vmi has a downward metrics volume")
    // It("should add downwardMetrics overhead").
    let mut vmi = test_vmi();
    set(
        &mut vmi,
        &["spec", "volumes"],
        json!([{"name": "m", "downwardMetrics": {}}]),
    );
    assert_eq!(total(&vmi), BASE_1GI + 40 * MI + MI);
    // The virtio-serial downwardMetrics device is not a volume: no overhead.
    let mut vmi = test_vmi();
    set(
        &mut vmi,
        &["spec", "domain", "devices", "downwardMetrics"],
        json!({}),
    );
    assert_eq!(total(&vmi), BASE_1GI + 40 * MI);
}

#[test]
fn kv_exec_probes() {
    // hypervisorbackend_test.go: When("the vmi has probes fields") DescribeTable("should add
    // probes overhead"): liveness only 110Mi, readiness only 110Mi, both 120Mi.
    let exec = json!({"exec": {"command": ["true"]}});
    for (live, ready, extra) in [(true, false, 110), (false, true, 110), (true, true, 120)] {
        let mut vmi = test_vmi();
        if live {
            set(&mut vmi, &["spec", "livenessProbe"], exec.clone());
        }
        if ready {
            set(&mut vmi, &["spec", "readinessProbe"], exec.clone());
        }
        assert_eq!(total(&vmi), BASE_1GI + 40 * MI + extra * MI);
    }
    // Non-exec probes add nothing.
    let mut vmi = test_vmi();
    set(
        &mut vmi,
        &["spec", "livenessProbe"],
        json!({"httpGet": {"port": 80}}),
    );
    assert_eq!(total(&vmi), BASE_1GI + 40 * MI);
}

#[test]
fn kv_sev() {
    // hypervisorbackend_test.go: When("the vmi requests AMD SEV") It("should add SEV overhead").
    for ls in [
        json!({"sev": {}}),
        json!({"snp": {}}),
        json!({"sev": {"policy": {"encryptedState": true}}}),
    ] {
        let mut vmi = test_vmi();
        set(&mut vmi, &["spec", "domain", "launchSecurity"], ls);
        assert_eq!(total(&vmi), BASE_1GI + 40 * MI + 256 * MI);
    }
    let mut vmi = test_vmi();
    set(
        &mut vmi,
        &["spec", "domain", "launchSecurity"],
        json!({"tdx": {}}),
    );
    assert_eq!(total(&vmi), BASE_1GI + 40 * MI);
}

#[test]
fn kv_tpm() {
    // hypervisorbackend_test.go: When("the vmi requests TPM device") It("should add SEV
    // overhead") [sic]: devices = {TPM: {}} -> +53Mi.
    let mut vmi = test_vmi();
    set(&mut vmi, &["spec", "domain", "devices"], json!({"tpm": {}}));
    assert_eq!(total(&vmi), BASE_1GI + 40 * MI + 53 * MI);
    // pkg/tpm/tpm.go HasDevice: enabled: false means no TPM (v1.6+).
    set(
        &mut vmi,
        &["spec", "domain", "devices", "tpm"],
        json!({"enabled": false}),
    );
    assert_eq!(total(&vmi), BASE_1GI + 40 * MI);
    // v1.5's GetMemoryOverhead tests only `Devices.TPM != nil`.
    let v15 = KubeVirtMemoryConfig {
        model: OverheadModel::V1_5,
        ..KubeVirtMemoryConfig::default()
    };
    assert_eq!(
        total_with(&vmi, &v15),
        2 * MI + 220 * MI + 8 * MI + 8 * MI + 16 * MI + 53 * MI
    );
}

#[test]
fn kv_ratio() {
    // hypervisorbackend_test.go: When("the additionalOverheadRatio is provided")
    // DescribeTable("should adjust the overhead using the given ratio"):
    // Entry("with the given value if the given value is a float", "3.2", false): 270Mi scaled
    // by MultiplyMemory: ceil(283115520/1000) = 283116 kB * 2.2 = 622855.2 -> 622855 kB.
    let b = kubevirt_overhead(&test_vmi(), &kv_with_ratio("3.2")).unwrap();
    assert_eq!(
        b.term("additionalGuestMemoryOverheadRatio"),
        Some(622_855_000)
    );
    assert_eq!(b.total, 283_115_520 + 622_855_000);
    assert_eq!(b.ratio.as_deref(), Some("3.2"));
    // Entry("with no value if the given value is not a float", "no_float", true): unscaled.
    let b = kubevirt_overhead(&test_vmi(), &kv_with_ratio("no_float")).unwrap();
    assert_eq!(b.total, 283_115_520);
    assert_eq!(b.ratio, None);
}

#[test]
fn kv_ratio_headroom_entries() {
    // hypervisorbackend_test.go: Context("Template with guest-to-request memory headroom")
    // DescribeTable("should add guest-to-memory headroom when configured with ratio"),
    // Entry("2.332"), Entry("1.234"), Entry("1.0"): requests memory 1G, cpu 1; expected is
    // MultiplyMemory(overhead without ratio, ratio). Without ratio: 1e9/512 = 1953125 page-table
    // bytes + 268Mi = 282,971,493; ceil(/1000) = 282972 kB.
    let mut vmi = test_vmi();
    set(
        &mut vmi,
        &["spec", "domain", "resources"],
        json!({"requests": {"memory": "1G", "cpu": "1"}}),
    );
    assert_eq!(total(&vmi), 282_971_493);
    // 282972 * 1.332 = 376918.704 -> 376918 kB.
    assert_eq!(
        total_with(&vmi, &kv_with_ratio("2.332")),
        282_971_493 + 376_918_000
    );
    // 282972 * 0.234 = 66215.448 -> 66215 kB.
    assert_eq!(
        total_with(&vmi, &kv_with_ratio("1.234")),
        282_971_493 + 66_215_000
    );
    assert_eq!(total_with(&vmi, &kv_with_ratio("1.0")), 282_971_493);
}

#[test]
fn kv_dedicated_cpu_or_guaranteed_qos() {
    // hypervisorbackend_test.go: When("the vmi is requesting dedicated CPU or wants to have
    // QOSGuaranteed") DescribeTable("should add 100Mi of overhead"): Entry("with DedicatedCPU"),
    // Entry("when wants QOSGuaranteed") (requests = limits = 1Gi memory, 4 CPUs; topology 1 core).
    let mut dedicated = test_vmi();
    set(
        &mut dedicated,
        &["spec", "domain", "cpu"],
        json!({"cores": 1, "dedicatedCpuPlacement": true}),
    );
    assert_eq!(total(&dedicated), BASE_1GI + 40 * MI + 100 * MI);

    let mut guaranteed = test_vmi();
    set(
        &mut guaranteed,
        &["spec", "domain", "cpu"],
        json!({"cores": 1}),
    );
    set(
        &mut guaranteed,
        &["spec", "domain", "resources"],
        json!({"requests": {"memory": "1Gi", "cpu": "4"}, "limits": {"memory": "1Gi", "cpu": "4"}}),
    );
    assert_eq!(total(&guaranteed), BASE_1GI + 40 * MI + 100 * MI);
    // Quantity.Cmp is exact: "1Gi" equals "1073741824", "4" equals "4000m".
    set(
        &mut guaranteed,
        &["spec", "domain", "resources"],
        json!({"requests": {"memory": "1073741824", "cpu": "4000m"}, "limits": {"memory": "1Gi", "cpu": "4"}}),
    );
    assert_eq!(total(&guaranteed), BASE_1GI + 40 * MI + 100 * MI);
    // CPU request without a matching limit: not guaranteed.
    set(
        &mut guaranteed,
        &["spec", "domain", "resources"],
        json!({"requests": {"memory": "1Gi", "cpu": "4"}, "limits": {"memory": "1Gi"}}),
    );
    assert_eq!(total(&guaranteed), BASE_1GI + 40 * MI);
}

#[test]
fn kv_dedicated_cpu_ordering_v1_5_vs_v1_6() {
    // v1.5 renderresources.go adds the 100Mi after multiplyMemory; v1.6+ (PR #14933) before.
    let mut vmi = test_vmi();
    set(
        &mut vmi,
        &["spec", "domain", "cpu"],
        json!({"cores": 1, "dedicatedCpuPlacement": true}),
    );
    let v16 = kv_with_ratio("2");
    // v1.6: (270 + 100) Mi doubled: ceil(387973120/1000) = 387974 kB added.
    assert_eq!(total_with(&vmi, &v16), 370 * MI + 387_974_000);
    let v15 = KubeVirtMemoryConfig {
        model: OverheadModel::V1_5,
        ..kv_with_ratio("2")
    };
    // v1.5: 254Mi (16Mi video) doubled, then + 100Mi: ceil(266338304/1000) = 266339 kB.
    let b = kubevirt_overhead(&vmi, &v15).unwrap();
    assert_eq!(b.total, 254 * MI + 266_339_000 + 100 * MI);
    let names: Vec<_> = b.terms.iter().map(|t| t.name).collect();
    let ratio_at = names
        .iter()
        .position(|n| *n == "additionalGuestMemoryOverheadRatio");
    let dedicated_at = names
        .iter()
        .position(|n| *n == "dedicatedCpuOrGuaranteedQos");
    assert!(ratio_at < dedicated_at, "{names:?}");
}

#[test]
fn kv_reserved_overhead() {
    // hypervisorbackend_test.go: When("reservedOverhead value is provided")
    // DescribeTable("should be considered as a resource overhead"): Entry("with some value",
    // NewScaledQuantity(100, Giga)), Entry("with zero value", &resource.Quantity{}).
    for (added, extra) in [(json!("100G"), 100_000_000_000_u64), (json!("0"), 0)] {
        let mut vmi = test_vmi();
        set(
            &mut vmi,
            &[
                "spec",
                "domain",
                "memory",
                "reservedOverhead",
                "addedOverhead",
            ],
            added,
        );
        assert_eq!(total(&vmi), BASE_1GI + 40 * MI + extra);
    }
}

#[test]
fn kv_qemu_overhead_50mi_model() {
    // kvm/hypervisorbackend_test.go after PR #18388: staticOverheadString = "243Mi" with
    // baseOverhead "7Mi": 250Mi = 2Mi + 240Mi + 8Mi.
    let v19 = KubeVirtMemoryConfig {
        model: OverheadModel::V1_9,
        ..KubeVirtMemoryConfig::default()
    };
    assert_eq!(total_with(&test_vmi(), &v19), (243 + 7 + 32 + 8) * MI);
}

fn binding_vmi(ifaces: Value) -> Value {
    let mut vmi = test_vmi();
    set(
        &mut vmi,
        &["spec", "domain", "devices", "interfaces"],
        ifaces,
    );
    vmi
}

fn plugins(list: &[(&str, &str)]) -> KubeVirtMemoryConfig {
    KubeVirtMemoryConfig {
        network_binding_memory: list
            .iter()
            .map(|(n, m)| (n.to_string(), crate::quantity::parse(m).unwrap()))
            .collect(),
        ..KubeVirtMemoryConfig::default()
    }
}

#[test]
fn kv_network_binding_plugins() {
    // pkg/network/netbinding/memory_test.go: DescribeTable("It should calculate memory overhead").
    let base = 270 * MI;
    let one = |n: &str, p: &str| json!({"name": n, "binding": {"name": p}});
    // Entry("when there is a single interface using a binding plugin"): 500Mi.
    let kv = plugins(&[("plugin1", "500Mi")]);
    assert_eq!(
        total_with(&binding_vmi(json!([one("net1", "plugin1")])), &kv),
        base + 500 * MI
    );
    // Entry("when there are two interfaces using the same binding plugin"): 500Mi.
    let vmi = binding_vmi(json!([one("net1", "plugin1"), one("net2", "plugin1")]));
    assert_eq!(total_with(&vmi, &kv), base + 500 * MI);
    // Entry("when there are two interfaces using different binding plugins"): 1100Mi.
    let kv2 = plugins(&[("plugin1", "500Mi"), ("plugin2", "600Mi")]);
    let vmi = binding_vmi(json!([one("net1", "plugin1"), one("net2", "plugin2")]));
    assert_eq!(total_with(&vmi, &kv2), base + 1100 * MI);
    // Entry("when there are two interfaces and just one is using a binding plugin"): 600Mi.
    let vmi = binding_vmi(json!([{"name": "net1"}, one("net2", "plugin2")]));
    assert_eq!(total_with(&vmi, &kv2), base + 600 * MI);
    // Entry("when there is a non-registered plugin, it should not be taken into account").
    let vmi = binding_vmi(json!([one("net1", "plugin1"), one("net2", "non existent")]));
    assert_eq!(total_with(&vmi, &kv), base + 500 * MI);
    // DescribeTable("Memory overhead should be zero"): no NICs / no plugin used / no memory.
    assert_eq!(total_with(&test_vmi(), &kv), base);
    assert_eq!(
        total_with(
            &binding_vmi(json!([{"name": "default", "masquerade": {}}])),
            &kv
        ),
        base
    );
    let no_memory = plugins(&[("plugin1", "0")]);
    assert_eq!(
        total_with(&binding_vmi(json!([one("net1", "plugin1")])), &no_memory),
        base
    );
}

#[test]
fn kv_plugins_are_added_after_the_ratio_unscaled() {
    let kv = KubeVirtMemoryConfig {
        additional_guest_memory_overhead_ratio: Some("2".into()),
        ..plugins(&[("passt", "250Mi")])
    };
    let vmi = binding_vmi(json!([{"name": "n", "binding": {"name": "passt"}}]));
    let b = kubevirt_overhead(&vmi, &kv).unwrap();
    assert_eq!(
        b.terms.last().map(|t| (t.name, t.bytes)),
        Some(("networkBindingPlugins", i128::from(250 * MI)))
    );
    assert_eq!(b.total, 270 * MI + 283_116_000 + 250 * MI);
}

#[test]
fn terms_sum_to_total() {
    let mut vmi = test_vmi();
    set(&mut vmi, &["spec", "domain", "devices", "tpm"], json!({}));
    set(&mut vmi, &["spec", "livenessProbe", "exec"], json!({}));
    let b = kubevirt_overhead(&vmi, &kv_with_ratio("1.25")).unwrap();
    assert_eq!(
        b.terms.iter().map(|t| t.bytes).sum::<i128>(),
        i128::from(b.total)
    );
    let names: Vec<_> = b.terms.iter().map(|t| t.name).collect();
    assert_eq!(
        names,
        [
            "pageTables",
            "virtLauncherMonitor",
            "virtLauncher",
            "virtlogd",
            "virtqemud",
            "qemu",
            "vcpus",
            "ioThread",
            "videoRam",
            "execProbes",
            "tpm",
            "additionalGuestMemoryOverheadRatio"
        ]
    );
}

#[test]
fn kv_errors_on_undecodable_values() {
    let mut vmi = test_vmi();
    set(
        &mut vmi,
        &["spec", "domain", "resources", "requests", "memory"],
        json!("lots"),
    );
    assert!(matches!(
        kubevirt_overhead(&vmi, &KubeVirtMemoryConfig::default()),
        Err(MemoryError::InvalidQuantity { .. })
    ));
    set(
        &mut vmi,
        &["spec", "domain", "resources", "requests", "memory"],
        json!("-1Gi"),
    );
    assert!(matches!(
        kubevirt_overhead(&vmi, &KubeVirtMemoryConfig::default()),
        Err(MemoryError::NegativeQuantity { .. })
    ));
    let mut vmi = test_vmi();
    set(&mut vmi, &["spec", "domain", "cpu"], json!({"cores": -1}));
    assert!(kubevirt_overhead(&vmi, &KubeVirtMemoryConfig::default()).is_err());
    assert_eq!(vcpus(&vmi), 1);
    // A JSON number is a valid quantity (Quantity.UnmarshalJSON accepts it).
    let mut vmi = test_vmi();
    set(
        &mut vmi,
        &["spec", "domain", "resources", "requests", "memory"],
        json!(1_073_741_824),
    );
    assert_eq!(total(&vmi), 283_115_520);
    // No memory request at all: page tables 0 (ResourceList.Memory() is zero).
    let mut vmi = test_vmi();
    set(&mut vmi, &["spec", "domain", "resources"], json!({}));
    assert_eq!(total(&vmi), 268 * MI);
}

#[test]
fn kubevirt_cr_is_read() {
    let kv = json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "KubeVirt",
        "spec": {"configuration": {
            "additionalGuestMemoryOverheadRatio": "1.5",
            "architectureConfiguration": {"defaultArchitecture": "arm64"},
            "network": {"binding": {
                "passt": {"sidecarImage": "x", "computeResourceOverhead": {"requests": {"memory": "250Mi"}}},
                "slirp": {"sidecarImage": "y"}
            }}
        }},
        "status": {"observedKubeVirtVersion": "v1.5.2"}
    });
    let cfg = KubeVirtMemoryConfig::from_kubevirt_cr(&kv).unwrap();
    assert_eq!(
        cfg.additional_guest_memory_overhead_ratio.as_deref(),
        Some("1.5")
    );
    assert_eq!(cfg.cluster_arch, "arm64");
    assert_eq!(cfg.model, OverheadModel::V1_5);
    assert_eq!(cfg.network_binding_memory.len(), 2);
    assert_eq!(
        cfg.network_binding_memory["passt"].to_u64_saturating(),
        250 * MI
    );
    assert!(cfg.network_binding_memory["slirp"].is_zero());

    assert_eq!(
        KubeVirtMemoryConfig::from_kubevirt_cr(&json!({})),
        Ok(KubeVirtMemoryConfig::default())
    );
    for (bad, _why) in [
        (
            json!({"spec": {"configuration": {"additionalGuestMemoryOverheadRatio": 2}}}),
            "number",
        ),
        (
            json!({"spec": {"configuration": {"network": {"binding": []}}}}),
            "binding array",
        ),
        (
            json!({"spec": {"configuration": {"network": {"binding": {"p": {"computeResourceOverhead": {"requests": {"memory": "x"}}}}}}}}),
            "plugin memory",
        ),
    ] {
        assert!(
            KubeVirtMemoryConfig::from_kubevirt_cr(&bad).is_err(),
            "{bad}"
        );
    }
    // Changed with the fix of the "ratio sends the VM to KVM" defect: ratios the webhook
    // refuses on UPDATE ("0.9", "abc", "NaN") used to be errors here. The webhook does not run
    // on CREATE, so virt-controller can see them; they are kept as written and
    // kubevirt_overhead decides what KubeVirt makes of each.
    for ratio in ["0.9", "abc", "NaN"] {
        let cr = json!({"spec": {"configuration": {"additionalGuestMemoryOverheadRatio": ratio}}});
        assert_eq!(
            KubeVirtMemoryConfig::from_kubevirt_cr(&cr)
                .map(|c| c.additional_guest_memory_overhead_ratio),
            Ok(Some(ratio.to_string()))
        );
    }
}

#[test]
fn model_from_version() {
    use OverheadModel::*;
    for (v, m) in [
        ("v1.4.0", Some(V1_5)),
        ("v1.5.2", Some(V1_5)),
        ("v1.6.0", Some(V1_6)),
        ("v1.7.1", Some(V1_6)),
        ("1.8.0-rc.1", Some(V1_6)),
        // v1.9.0 keeps QemuOverhead "30Mi" (pkg/hypervisor/kvm/hypervisorbackend.go:42 at
        // v1.9.0); the "50Mi" of PR #18388 is on main only. This entry used to expect V1_9.
        ("v1.9.0", Some(V1_6)),
        ("v1.9.4", Some(V1_6)),
        ("v1.10.0", Some(V1_9)),
        ("v1.10.3", Some(V1_9)),
        ("v2.0.0", None),
        ("latest", None),
        ("", None),
    ] {
        assert_eq!(OverheadModel::from_kubevirt_version(v), m, "{v}");
    }
}

#[test]
fn guest_memory_follows_get_virtual_memory() {
    // converter.go GetVirtualMemory: memory.guest, else the memory limit, else the request.
    let mut vmi = test_vmi();
    assert_eq!(guest_memory_bytes(&vmi), Ok(GI));
    set(
        &mut vmi,
        &["spec", "domain", "resources", "limits", "memory"],
        json!("3Gi"),
    );
    assert_eq!(guest_memory_bytes(&vmi), Ok(3 * GI));
    set(
        &mut vmi,
        &["spec", "domain", "memory", "guest"],
        json!("2Gi"),
    );
    assert_eq!(guest_memory_bytes(&vmi), Ok(2 * GI));
    let empty = json!({"spec": {"domain": {}}});
    assert_eq!(
        guest_memory_bytes(&empty),
        Err(MemoryError::MissingGuestMemory)
    );
}

// ---- mshv terms ---------------------------------------------------------------------------

#[test]
fn mshv_terms_parse() {
    let t = MshvTerms::parse("64Mi", "2Mi", "1.5").unwrap();
    assert_eq!(
        t,
        MshvTerms {
            fixed: 64 * MI,
            per_vcpu: 2 * MI,
            guest_memory_ppm: 15_000
        }
    );
    assert!(!t.is_zero());
    assert!(MshvTerms::parse("0", "0", "0").unwrap().is_zero());
    assert_eq!(
        MshvTerms::parse("0", "0", "100").unwrap().guest_memory_ppm,
        1_000_000
    );
    assert_eq!(
        MshvTerms::parse("0", "0", "0.0001")
            .unwrap()
            .guest_memory_ppm,
        1
    );
    assert_eq!(
        MshvTerms::parse("0", "0", ".25").unwrap().guest_memory_ppm,
        2_500
    );
    assert_eq!(
        MshvTerms::parse("0", "0", "007.50000")
            .unwrap()
            .guest_memory_ppm,
        75_000
    );
    assert_eq!(MshvTerms::parse("0.5", "1m", "0").unwrap().fixed, 1);
    for (f, p, g, field) in [
        ("lots", "0", "0", "fixed"),
        ("-1", "0", "0", "fixed"),
        ("1e30", "0", "0", "fixed"),
        ("0", "-1Mi", "0", "perVcpu"),
        ("0", "", "0", "perVcpu"),
        ("0", "0", "101", "guestMemoryPercent"),
        ("0", "0", "100.0001", "guestMemoryPercent"),
        ("0", "0", "1000", "guestMemoryPercent"),
        ("0", "0", "-1", "guestMemoryPercent"),
        ("0", "0", "1e1", "guestMemoryPercent"),
        ("0", "0", "1.23456", "guestMemoryPercent"),
        ("0", "0", "", "guestMemoryPercent"),
        ("0", "0", ".", "guestMemoryPercent"),
        ("0", "0", "1%", "guestMemoryPercent"),
    ] {
        match MshvTerms::parse(f, p, g) {
            Ok(t) => panic!("accepted {f} {p} {g}: {t:?}"),
            Err(e) => {
                assert_eq!(e.field(), field, "{f} {p} {g}");
                assert!(!e.to_string().is_empty());
            }
        }
    }
}

#[test]
fn mshv_delta_formula() {
    let t = MshvTerms {
        fixed: 64 * MI,
        per_vcpu: 2 * MI,
        guest_memory_ppm: 15_000,
    };
    // 64Mi + 4 * 2Mi + ceil(8Gi * 1.5%) = 64Mi + 8Mi + 128849018.88 -> 128849019.
    assert_eq!(mshv_delta(&t, 4, 8 * GI), 72 * MI + 128_849_019);
    assert_eq!(mshv_delta(&MshvTerms::default(), 1000, u64::MAX), 0);
    let huge = MshvTerms {
        fixed: u64::MAX,
        per_vcpu: u64::MAX,
        guest_memory_ppm: 1_000_000,
    };
    assert_eq!(mshv_delta(&huge, u64::MAX, u64::MAX), u64::MAX);
    let all = MshvTerms {
        fixed: 0,
        per_vcpu: 0,
        guest_memory_ppm: 1_000_000,
    };
    assert_eq!(mshv_delta(&all, 1, 12345), 12345);
}

// ---- plan and apply -------------------------------------------------------------------------

/// A virt-launcher Pod as KubeVirt renders it for `vmi` with requests 2Gi (+ overhead).
fn launcher_pod(request: &str, limit: Option<&str>) -> Value {
    let mut resources = json!({"requests": {"cpu": "100m", "memory": request, "devices.kubevirt.io/kvm": "1"}, "limits": {"devices.kubevirt.io/kvm": "1"}});
    if let Some(l) = limit {
        resources["limits"]["memory"] = json!(l);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "virt-launcher-test-vmi-", "annotations": {"kubevirt.io/domain": "test-vmi"}},
        "spec": {"containers": [
            {"name": "compute", "image": "virt-launcher", "resources": resources},
            {"name": "guest-console-log", "resources": {"requests": {"memory": "60M"}}}
        ]}
    })
}

fn vmi_2gi() -> Value {
    let mut vmi = test_vmi();
    set(
        &mut vmi,
        &["spec", "domain", "resources", "requests", "memory"],
        json!("2Gi"),
    );
    set(
        &mut vmi,
        &["spec", "domain", "memory", "guest"],
        json!("2Gi"),
    );
    set(
        &mut vmi,
        &["spec", "domain", "cpu"],
        json!({"sockets": 1, "cores": 1, "threads": 1}),
    );
    vmi
}

fn terms() -> MshvTerms {
    MshvTerms::parse("64Mi", "2Mi", "1.5").unwrap()
}

fn memory<'p>(pod: &'p Value, list: &str) -> Option<&'p str> {
    pod["spec"]["containers"][0]["resources"][list]["memory"].as_str()
}

fn annotation<'p>(pod: &'p Value, key: &str) -> Option<&'p str> {
    pod["metadata"]["annotations"][key].as_str()
}

#[test]
fn plan_and_apply() {
    let vmi = vmi_2gi();
    let p = plan(&vmi, &KubeVirtMemoryConfig::default(), &terms()).unwrap();
    assert_eq!(p.kubevirt.as_ref().map(|k| k.total), Ok(285_212_672));
    // 64Mi + 1 * 2Mi + ceil(2Gi * 1.5 %) = 69206016 + 32212254.72 -> 32212255.
    assert_eq!(p.delta, 66 * MI + 32_212_255);

    let mut pod = launcher_pod("2432696320", Some("2432696320"));
    let applied = apply(&mut pod, 0, &vmi, &p).unwrap();
    assert_eq!(
        applied,
        Applied {
            total: Some(285_212_672 + p.delta),
            issues: vec![]
        }
    );
    let expected = (2_432_696_320 + p.delta).to_string();
    assert_eq!(memory(&pod, "requests"), Some(expected.as_str()));
    assert_eq!(memory(&pod, "limits"), Some(expected.as_str()));
    assert_eq!(
        annotation(&pod, TOTAL_ANNOTATION),
        Some((285_212_672 + p.delta).to_string().as_str())
    );
    assert_eq!(
        annotation(&pod, ADDED_ANNOTATION),
        Some(p.delta.to_string().as_str())
    );
    // Untouched: other resources, other containers, other annotations.
    assert_eq!(
        pod["spec"]["containers"][0]["resources"]["requests"]["cpu"],
        "100m"
    );
    assert_eq!(
        pod["spec"]["containers"][1]["resources"]["requests"]["memory"],
        "60M"
    );
    assert_eq!(annotation(&pod, "kubevirt.io/domain"), Some("test-vmi"));
    assert_eq!(annotation(&pod, KUBEVIRT_OVERHEAD_ANNOTATION), None);

    // Twice is once.
    let once = pod.clone();
    apply(&mut pod, 0, &vmi, &p).unwrap();
    assert_eq!(pod, once);
}

#[test]
fn apply_follows_with_memory_overhead() {
    // renderresources_test.go: Context("WithMemoryOverhead option"): It("the specified overhead
    // is added to the user requested VM memory") (64M + 128M on requests and limits) and
    // When("the overcommit guest overhead option is specified") It("the overhead is *only* added
    // to the VM's limits, not requests").
    let p = MshvMemoryPlan {
        kubevirt: kubevirt_overhead(&test_vmi(), &KubeVirtMemoryConfig::default()),
        delta: 128_000_000,
    };
    let mut pod = launcher_pod("64M", Some("64M"));
    apply(&mut pod, 0, &test_vmi(), &p).unwrap();
    assert_eq!(memory(&pod, "requests"), Some("192000000"));
    assert_eq!(memory(&pod, "limits"), Some("192000000"));

    let mut overcommit = test_vmi();
    set(
        &mut overcommit,
        &["spec", "domain", "resources", "overcommitGuestOverhead"],
        json!(true),
    );
    let mut pod = launcher_pod("64M", Some("64M"));
    apply(&mut pod, 0, &overcommit, &p).unwrap();
    assert_eq!(memory(&pod, "requests"), Some("64M"));
    assert_eq!(memory(&pod, "limits"), Some("192000000"));

    // No limit: only the request changes, no limit is invented.
    let mut pod = launcher_pod("64M", None);
    apply(&mut pod, 0, &test_vmi(), &p).unwrap();
    assert_eq!(memory(&pod, "requests"), Some("192000000"));
    assert_eq!(memory(&pod, "limits"), None);
}

#[test]
fn apply_with_hugepages_ignores_overcommit() {
    // renderresources.go WithHugePages: requests.memory = overhead (+ request-guest difference)
    // whatever OvercommitGuestOverhead says; an existing memory limit gets the overhead too.
    let mut vmi = vmi_2gi();
    set(
        &mut vmi,
        &["spec", "domain", "memory", "hugepages"],
        json!({"pageSize": "2Mi"}),
    );
    set(
        &mut vmi,
        &["spec", "domain", "resources", "overcommitGuestOverhead"],
        json!(true),
    );
    let p = plan(&vmi, &KubeVirtMemoryConfig::default(), &terms()).unwrap();
    let mut pod = launcher_pod("285212672", None);
    pod["spec"]["containers"][0]["resources"]["requests"]["hugepages-2Mi"] = json!("2Gi");
    apply(&mut pod, 0, &vmi, &p).unwrap();
    assert_eq!(
        memory(&pod, "requests"),
        Some((285_212_672 + p.delta).to_string().as_str())
    );
    assert_eq!(
        pod["spec"]["containers"][0]["resources"]["requests"]["hugepages-2Mi"],
        "2Gi"
    );
}

#[test]
fn apply_adjusts_to_a_changed_delta_and_kubevirt_report() {
    let vmi = vmi_2gi();
    let mut pod = launcher_pod("2432696320", None);
    pod["metadata"]["annotations"][KUBEVIRT_OVERHEAD_ANNOTATION] = json!("285212672");
    let mut p = plan(&vmi, &KubeVirtMemoryConfig::default(), &terms()).unwrap();
    apply(&mut pod, 0, &vmi, &p).unwrap();
    assert_eq!(
        annotation(&pod, KUBEVIRT_OVERHEAD_ANNOTATION),
        Some((285_212_672 + p.delta).to_string().as_str())
    );
    // A smaller delta later takes the difference back.
    p.delta = MI;
    let applied = apply(&mut pod, 0, &vmi, &p).unwrap();
    // The total is KubeVirt's value as written (the annotation minus the earlier delta) plus
    // the new delta.
    assert_eq!(applied.total, Some(285_212_672 + MI));
    assert_eq!(
        memory(&pod, "requests"),
        Some((2_432_696_320 + MI).to_string().as_str())
    );
    assert_eq!(
        annotation(&pod, KUBEVIRT_OVERHEAD_ANNOTATION),
        Some((285_212_672 + MI).to_string().as_str())
    );
    assert_eq!(
        annotation(&pod, ADDED_ANNOTATION),
        Some(MI.to_string().as_str())
    );
}

#[test]
fn apply_with_zero_delta_keeps_memory_text() {
    let vmi = vmi_2gi();
    let p = plan(
        &vmi,
        &KubeVirtMemoryConfig::default(),
        &MshvTerms::default(),
    )
    .unwrap();
    assert_eq!(p.delta, 0);
    let mut pod = launcher_pod("2Gi", Some("2Gi"));
    apply(&mut pod, 0, &vmi, &p).unwrap();
    assert_eq!(memory(&pod, "requests"), Some("2Gi"));
    assert_eq!(memory(&pod, "limits"), Some("2Gi"));
    assert_eq!(annotation(&pod, ADDED_ANNOTATION), Some("0"));
}

#[test]
fn apply_errors_leave_the_pod_untouched() {
    let vmi = vmi_2gi();
    let p = plan(&vmi, &KubeVirtMemoryConfig::default(), &terms()).unwrap();
    let cases: Vec<(Value, usize, Value)> = vec![
        (launcher_pod("lots", None), 0, vmi.clone()),
        (launcher_pod("2Gi", Some("-1")), 0, vmi.clone()),
        (launcher_pod("2Gi", None), 5, vmi.clone()),
        (
            {
                let mut pod = launcher_pod("2Gi", None);
                pod["metadata"]["annotations"][ADDED_ANNOTATION] = json!("12x");
                pod
            },
            0,
            vmi.clone(),
        ),
        (
            {
                let mut pod = launcher_pod("2Gi", None);
                pod["metadata"]["annotations"][ADDED_ANNOTATION] = json!("99999999999999");
                pod
            },
            0,
            vmi.clone(),
        ),
        (
            {
                let mut pod = launcher_pod("2Gi", None);
                pod["metadata"]["annotations"] = json!("x");
                pod
            },
            0,
            vmi.clone(),
        ),
        (launcher_pod("2Gi", None), 0, {
            let mut v = vmi.clone();
            set(
                &mut v,
                &["metadata", "annotations", ADDED_ANNOTATION],
                json!("0"),
            );
            v
        }),
        (json!("not a pod"), 0, vmi.clone()),
    ];
    for (pod, index, vmi) in cases {
        let mut edited = pod.clone();
        let r = apply(&mut edited, index, &vmi, &p);
        assert!(r.is_err(), "accepted {pod}");
        assert_eq!(edited, pod, "changed on error");
        assert!(!r.unwrap_err().to_string().is_empty());
    }
}

#[test]
fn apply_creates_a_missing_request() {
    let vmi = vmi_2gi();
    let p = plan(&vmi, &KubeVirtMemoryConfig::default(), &terms()).unwrap();
    let mut pod = json!({"spec": {"containers": [{"name": "compute"}]}});
    apply(&mut pod, 0, &vmi, &p).unwrap();
    assert_eq!(memory(&pod, "requests"), Some(p.delta.to_string().as_str()));
    assert_eq!(
        annotation(&pod, ADDED_ANNOTATION),
        Some(p.delta.to_string().as_str())
    );
    let once = pod.clone();
    apply(&mut pod, 0, &vmi, &p).unwrap();
    assert_eq!(pod, once);
}

// ---- the ratio as KubeVirt reads it at runtime, and the report ------------------------------

#[test]
fn go_parse_float_follows_strconv() {
    use crate::memory::kubevirt::{GoFloat, go_parse_float};
    // Values Go returns without error (src/strconv/atof.go).
    for (s, v) in [
        ("3.2", 3.2),
        ("1.0", 1.0),
        ("2.332", 2.332),
        ("1.", 1.0),
        (".5", 0.5),
        ("+.5e-1", 0.05),
        ("1.e1", 10.0),
        ("1E2", 100.0),
        ("1_000.5", 1000.5),
        ("1e1_0", 1e10),
        ("0.9", 0.9),
        ("-2", -2.0),
        ("1e-400", 0.0),
        ("0e99999", 0.0),
    ] {
        assert_eq!(go_parse_float(s), GoFloat::Value(v), "{s}");
    }
    for (s, inf) in [
        ("Inf", f64::INFINITY),
        ("+infinity", f64::INFINITY),
        ("-INF", f64::NEG_INFINITY),
    ] {
        assert_eq!(go_parse_float(s), GoFloat::Value(inf), "{s}");
    }
    for s in ["NaN", "nan", "NAN"] {
        assert!(
            matches!(go_parse_float(s), GoFloat::Value(v) if v.is_nan()),
            "{s}"
        );
    }
    // Errors: syntax, and ErrRange for finite literals beyond MaxFloat64.
    for s in [
        "",
        "no_float",
        "abc",
        " 1.5",
        "1.5 ",
        "1.5x",
        ".",
        "+",
        "1e",
        "1e+",
        "1..5",
        "_1",
        "1_",
        "1__0",
        "1_.5",
        "1_e5",
        "-nan",
        "+NaN",
        "infin",
        "infinityx",
        "0x",
        "0x1.8",
        "0xg",
        "1e400",
        "1e99999999999999999999",
        "1,5",
        "١",
    ] {
        assert_eq!(go_parse_float(s), GoFloat::Error, "{s:?}");
    }
    // Hexadecimal floats: accepted by Go, not parsed here.
    for s in ["0x1p1", "0X1.8P+1", "-0x_1p-2", "0x1_0p0"] {
        assert_eq!(go_parse_float(s), GoFloat::Hex, "{s}");
    }
}

#[test]
fn kv_ratio_not_a_float_from_the_cr_is_ignored() {
    // hypervisorbackend_test.go:279 (v1.8.0 and v1.9.0): Entry("with no value if the given
    // value is not a float", "no_float", true): GetMemoryOverhead returns the unscaled overhead
    // (hypervisorbackend.go:167-171 at v1.8.0). Read through the KubeVirt CR, as the policy
    // does: the CR is accepted and the overhead is the one without a ratio.
    for ratio in ["no_float", "abc", "1,5", "1e400", "-nan", " 2"] {
        let cr = json!({"spec": {"configuration": {"additionalGuestMemoryOverheadRatio": ratio}}});
        let kv = KubeVirtMemoryConfig::from_kubevirt_cr(&cr).unwrap();
        let b = kubevirt_overhead(&test_vmi(), &kv).unwrap();
        assert_eq!(b.total, 283_115_520, "{ratio}");
        assert_eq!(b.ratio, None, "{ratio}");
        assert_eq!(
            b.term("additionalGuestMemoryOverheadRatio"),
            None,
            "{ratio}"
        );
    }
    // Underscores are Go float syntax: "1_0" is 10.
    assert_eq!(
        total_with(&test_vmi(), &kv_with_ratio("1_0")),
        total_with(&test_vmi(), &kv_with_ratio("10"))
    );
}

#[test]
fn kv_ratio_below_one_shrinks_the_overhead() {
    // The webhook refuses a ratio < 1.0 on UPDATE only (kubevirt-update-admitter.go:482-505 at
    // v1.9.0); GetMemoryOverhead applies whatever ParseFloat returns: MultiplyMemory adds
    // int64(283116 kB × (0.5 − 1)) = −141558 kB.
    let b = kubevirt_overhead(&test_vmi(), &kv_with_ratio("0.5")).unwrap();
    assert_eq!(
        b.term("additionalGuestMemoryOverheadRatio"),
        Some(-141_558_000)
    );
    assert_eq!(b.total, 283_115_520 - 141_558_000);
    assert_eq!(
        b.terms.iter().map(|t| t.bytes).sum::<i128>(),
        i128::from(b.total)
    );
    // 0.0: 283115520 − 283116000 = −480 bytes; no byte count reports that.
    assert_eq!(
        kubevirt_overhead(&test_vmi(), &kv_with_ratio("0")),
        Err(MemoryError::NegativeOverhead { bytes: -480 })
    );
    assert!(matches!(
        kubevirt_overhead(&test_vmi(), &kv_with_ratio("-3")),
        Err(MemoryError::NegativeOverhead { .. })
    ));
}

#[test]
fn kv_ratio_go_computes_garbage_for_is_unreproducible() {
    // ParseFloat accepts NaN and infinities (and the webhook lets NaN and +Inf through, as
    // `ratio < 1.0` is false); int64() of the product is then platform-dependent in Go. Same
    // for a finite ratio whose product leaves int64, and for hexadecimal floats (not parsed).
    for ratio in ["NaN", "Inf", "-Infinity", "1e300", "0x1p1"] {
        assert!(
            matches!(
                kubevirt_overhead(&test_vmi(), &kv_with_ratio(ratio)),
                Err(MemoryError::UnreproducibleRatio { .. })
            ),
            "{ratio}"
        );
    }
}

#[test]
fn kv_passt_binding() {
    // pkg/network/resources/memory_test.go (v1.8.0 and v1.9.0): Entry("when vmi has passt
    // binding") :202, 250Mi, and Entry("when vmi has passt binding and a binding plugin") :210,
    // 750Mi; both unscaled, after the ratio.
    let passt = json!({"name": "default", "passtBinding": {}});
    let vmi = binding_vmi(json!([passt.clone()]));
    let b = kubevirt_overhead(&vmi, &KubeVirtMemoryConfig::default()).unwrap();
    assert_eq!(b.total, 270 * MI + 250 * MI);
    assert_eq!(b.term("passtBinding"), Some(i128::from(250 * MI)));
    let vmi = binding_vmi(json!([passt, {"name": "net1", "binding": {"name": "plugin1"}}]));
    assert_eq!(
        total_with(&vmi, &plugins(&[("plugin1", "500Mi")])),
        270 * MI + 750 * MI
    );
    let kv = KubeVirtMemoryConfig {
        additional_guest_memory_overhead_ratio: Some("2".into()),
        ..KubeVirtMemoryConfig::default()
    };
    assert_eq!(
        total_with(
            &binding_vmi(json!([{"name": "d", "passtBinding": {}}])),
            &kv
        ),
        270 * MI + 283_116_000 + 250 * MI
    );
}

#[test]
fn kv_plugins_without_memory_from_the_cr() {
    // memory_test.go:67 Entry("when binding plugin is used on the VMI, but it does not require
    // compute overhead") and :76 ("... does not require memory overhead"): zero.
    for plugin in [
        json!({"sidecarImage": "x"}),
        json!({"computeResourceOverhead": {"requests": {"cpu": "100m"}}}),
    ] {
        let cr = json!({"spec": {"configuration": {"network": {"binding": {"plugin1": plugin}}}}});
        let kv = KubeVirtMemoryConfig::from_kubevirt_cr(&cr).unwrap();
        let vmi = binding_vmi(json!([{"name": "net1", "binding": {"name": "plugin1"}}]));
        assert_eq!(total_with(&vmi, &kv), 270 * MI);
    }
}

#[test]
fn plan_fails_only_for_the_delta() {
    let vmi = vmi_2gi();
    let good = plan(&vmi, &KubeVirtMemoryConfig::default(), &terms()).unwrap();
    // The KubeVirt CR unreadable: the delta is the same, the overhead unknown.
    let unavailable = MemoryError::KubeVirtUnavailable {
        cause: "forbidden".into(),
    };
    let p = plan_with(&vmi, Err(&unavailable), &terms()).unwrap();
    assert_eq!(p.delta, good.delta);
    assert_eq!(p.kubevirt, Err(unavailable));
    // A ratio Go computes garbage for: same.
    let p = plan(&vmi, &kv_with_ratio("NaN"), &terms()).unwrap();
    assert_eq!(p.delta, good.delta);
    assert!(p.kubevirt.is_err());
    // A VMI field only the overhead reads, undecodable: same.
    let mut odd = vmi.clone();
    set(
        &mut odd,
        &[
            "spec",
            "domain",
            "memory",
            "reservedOverhead",
            "addedOverhead",
        ],
        json!("lots"),
    );
    let p = plan(&odd, &KubeVirtMemoryConfig::default(), &terms()).unwrap();
    assert_eq!(p.delta, good.delta);
    assert!(matches!(
        p.kubevirt,
        Err(MemoryError::InvalidQuantity { .. })
    ));
    // What the delta reads, undecodable: an error, but only when that term is used.
    let mut bad_cpu = vmi.clone();
    set(
        &mut bad_cpu,
        &["spec", "domain", "cpu"],
        json!({"cores": -1}),
    );
    assert!(plan(&bad_cpu, &KubeVirtMemoryConfig::default(), &terms()).is_err());
    let no_per_vcpu = MshvTerms::parse("64Mi", "0", "1.5").unwrap();
    assert!(plan(&bad_cpu, &KubeVirtMemoryConfig::default(), &no_per_vcpu).is_ok());
    let mut no_memory = vmi.clone();
    set(&mut no_memory, &["spec", "domain"], json!({}));
    assert_eq!(
        plan(&no_memory, &KubeVirtMemoryConfig::default(), &terms()),
        Err(MemoryError::MissingGuestMemory)
    );
}

/// The plan of `vmi_2gi` with the overhead unknown.
fn plan_without_overhead() -> MshvMemoryPlan {
    let unavailable = MemoryError::KubeVirtUnavailable {
        cause: "forbidden".into(),
    };
    plan_with(&vmi_2gi(), Err(&unavailable), &terms()).unwrap()
}

#[test]
fn apply_without_a_report_still_adds_the_delta() {
    let vmi = vmi_2gi();
    let p = plan_without_overhead();
    let mut pod = launcher_pod("2432696320", Some("2432696320"));
    // A total from an earlier run stays as it was.
    pod["metadata"]["annotations"][TOTAL_ANNOTATION] = json!("123");
    let applied = apply(&mut pod, 0, &vmi, &p).unwrap();
    assert_eq!(applied.total, None);
    assert_eq!(
        applied.issues,
        vec![ReportIssue::TotalNotWritten {
            cause: MemoryError::KubeVirtUnavailable {
                cause: "forbidden".into()
            }
        }]
    );
    assert!(applied.issues[0].to_string().contains(TOTAL_ANNOTATION));
    let expected = (2_432_696_320 + p.delta).to_string();
    assert_eq!(memory(&pod, "requests"), Some(expected.as_str()));
    assert_eq!(memory(&pod, "limits"), Some(expected.as_str()));
    assert_eq!(annotation(&pod, TOTAL_ANNOTATION), Some("123"));
    assert_eq!(
        annotation(&pod, ADDED_ANNOTATION),
        Some(p.delta.to_string().as_str())
    );
    // Without an earlier total, none is invented.
    let mut pod = launcher_pod("2432696320", None);
    apply(&mut pod, 0, &vmi, &p).unwrap();
    assert_eq!(annotation(&pod, TOTAL_ANNOTATION), None);
    let once = pod.clone();
    apply(&mut pod, 0, &vmi, &p).unwrap();
    assert_eq!(pod, once);
}

#[test]
fn apply_takes_the_total_from_kubevirts_annotation() {
    // KubeVirt's own value wins over the model, which is not even needed: here it is unknown,
    // and the annotation differs from what the model would say.
    let vmi = vmi_2gi();
    let p = plan_without_overhead();
    let mut pod = launcher_pod("2432696320", None);
    pod["metadata"]["annotations"][KUBEVIRT_OVERHEAD_ANNOTATION] = json!("300000000");
    let applied = apply(&mut pod, 0, &vmi, &p).unwrap();
    let total = 300_000_000 + p.delta;
    assert_eq!(
        applied,
        Applied {
            total: Some(total),
            issues: vec![]
        }
    );
    assert_eq!(
        annotation(&pod, TOTAL_ANNOTATION),
        Some(total.to_string().as_str())
    );
    assert_eq!(
        annotation(&pod, KUBEVIRT_OVERHEAD_ANNOTATION),
        Some(total.to_string().as_str())
    );
    // Again: the annotation now includes the delta (P); KubeVirt's value is the annotation
    // minus P, so the total does not grow.
    let once = pod.clone();
    let again = apply(&mut pod, 0, &vmi, &p).unwrap();
    assert_eq!(again.total, Some(total));
    assert_eq!(pod, once);
    // With a model at hand the annotation still wins.
    let with_model = plan(&vmi, &KubeVirtMemoryConfig::default(), &terms()).unwrap();
    let mut pod = launcher_pod("2432696320", None);
    pod["metadata"]["annotations"][KUBEVIRT_OVERHEAD_ANNOTATION] = json!("300000000");
    assert_eq!(
        apply(&mut pod, 0, &vmi, &with_model).unwrap().total,
        Some(total)
    );
}

#[test]
fn apply_handles_a_negative_kubevirt_report() {
    // A ratio below 0 makes KubeVirt write a negative overhead (FormatInt of a negative
    // Value()); it is bumped like any other, and the total is reported when it is a byte count.
    let vmi = vmi_2gi();
    let p = plan_without_overhead();
    let mut pod = launcher_pod("2432696320", None);
    pod["metadata"]["annotations"][KUBEVIRT_OVERHEAD_ANNOTATION] = json!("-480");
    let applied = apply(&mut pod, 0, &vmi, &p).unwrap();
    assert_eq!(applied.total, Some(p.delta - 480));
    assert_eq!(
        annotation(&pod, KUBEVIRT_OVERHEAD_ANNOTATION),
        Some((p.delta - 480).to_string().as_str())
    );
    let mut pod = launcher_pod("2432696320", None);
    pod["metadata"]["annotations"][KUBEVIRT_OVERHEAD_ANNOTATION] = json!("-999999999999");
    let applied = apply(&mut pod, 0, &vmi, &p).unwrap();
    assert_eq!(applied.total, None);
    assert!(matches!(
        applied.issues.as_slice(),
        [ReportIssue::TotalNotWritten {
            cause: MemoryError::NegativeOverhead { .. }
        }]
    ));
    assert_eq!(
        memory(&pod, "requests"),
        Some((2_432_696_320 + p.delta).to_string().as_str())
    );
}

#[test]
fn apply_leaves_an_unreadable_kubevirt_report() {
    // Used to be an error case of apply_errors_leave_the_pod_untouched (a JSON number in
    // kubevirt.io/memory-overhead-bytes made the whole memory step fail, hence a fallback to
    // KVM). KubeVirt never writes such a value (FormatInt); it is now left as it is, said in an
    // issue, and the total comes from the model.
    let vmi = vmi_2gi();
    let p = plan(&vmi, &KubeVirtMemoryConfig::default(), &terms()).unwrap();
    for bad in [json!(5), json!("lots"), json!({})] {
        let mut pod = launcher_pod("2432696320", None);
        pod["metadata"]["annotations"][KUBEVIRT_OVERHEAD_ANNOTATION] = bad.clone();
        let applied = apply(&mut pod, 0, &vmi, &p).unwrap();
        assert_eq!(applied.total, Some(285_212_672 + p.delta), "{bad}");
        assert_eq!(
            applied.issues,
            vec![ReportIssue::KubeVirtReportUnreadable {
                value: bad.to_string()
            }]
        );
        assert_eq!(
            pod["metadata"]["annotations"][KUBEVIRT_OVERHEAD_ANNOTATION],
            bad
        );
        assert_eq!(
            memory(&pod, "requests"),
            Some((2_432_696_320 + p.delta).to_string().as_str())
        );
        let once = pod.clone();
        apply(&mut pod, 0, &vmi, &p).unwrap();
        assert_eq!(pod, once);
    }
}

fn arb_ratio_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[-+0-9._eEpPxX]{0,10}",
        "[+-]?([nN][aA][nN]|[iI][nN][fF]([iI][nN][iI][tT][yY])?)",
        "0\\.[0-9]{1,3}",
        ".{0,6}",
    ]
}

fn arb_report() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        any::<i64>().prop_map(|n| Some(json!(n.to_string()))),
        arb_json().prop_map(Some),
    ]
}

/// Not a test of behaviour: prints the two example breakdowns of docs/memory-overhead.md
/// (`cargo test --lib print_example_breakdowns -- --nocapture`).
#[test]
fn print_example_breakdowns() {
    for (title, vmi, kv_cr, t) in examples() {
        let kv = KubeVirtMemoryConfig::from_kubevirt_cr(&kv_cr).unwrap();
        let terms = MshvTerms::parse(t.0, t.1, t.2).unwrap();
        let p = plan(&vmi, &kv, &terms).unwrap();
        let k = p.kubevirt.as_ref().unwrap();
        let total = k.total + p.delta;
        println!("### {title}");
        println!(
            "model {}, ratio {:?}, vcpus {}, guest {} bytes",
            kv.model.name(),
            k.ratio,
            vcpus(&vmi),
            guest_memory_bytes(&vmi).unwrap()
        );
        println!("| term | bytes | MiB |");
        println!("|---|---:|---:|");
        for term in &k.terms {
            println!(
                "| {} | {} | {:.3} |",
                term.name,
                term.bytes,
                term.bytes as f64 / MI as f64
            );
        }
        println!(
            "| **KubeVirt total** | **{}** | {:.3} |",
            k.total,
            k.total as f64 / MI as f64
        );
        println!(
            "| mshv delta (fixed {}, perVcpu {}, guestMemoryPercent {}) | {} | {:.3} |",
            t.0,
            t.1,
            t.2,
            p.delta,
            p.delta as f64 / MI as f64
        );
        println!(
            "| **total** | **{}** | {:.3} |",
            total,
            total as f64 / MI as f64
        );
        println!();
        assert_eq!(
            k.terms.iter().map(|t| t.bytes).sum::<i128>(),
            i128::from(k.total)
        );
    }
}

type Example = (
    &'static str,
    Value,
    Value,
    (&'static str, &'static str, &'static str),
);

fn examples() -> Vec<Example> {
    let small = json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": "fedora", "namespace": "default"},
        "spec": {
            "architecture": "amd64",
            "domain": {
                "cpu": {"sockets": 1, "cores": 4, "threads": 1},
                "memory": {"guest": "8Gi"},
                "resources": {"requests": {"memory": "8Gi"}},
                "devices": {"interfaces": [{"name": "default", "masquerade": {}}]}
            },
            "networks": [{"name": "default", "pod": {}}]
        }
    });
    let big = json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": "db", "namespace": "prod"},
        "spec": {
            "architecture": "amd64",
            "domain": {
                "cpu": {"sockets": 2, "cores": 8, "threads": 1, "dedicatedCpuPlacement": true},
                "memory": {"guest": "64Gi"},
                "resources": {"requests": {"memory": "64Gi", "cpu": "16"}, "limits": {"memory": "64Gi", "cpu": "16"}},
                "devices": {
                    "autoattachGraphicsDevice": false,
                    "tpm": {},
                    "interfaces": [{"name": "default", "binding": {"name": "passt"}}]
                }
            },
            "livenessProbe": {"exec": {"command": ["cat", "/tmp/healthy"]}},
            "networks": [{"name": "default", "pod": {}}]
        }
    });
    let plain_cr =
        json!({"spec": {"configuration": {}}, "status": {"observedKubeVirtVersion": "v1.8.1"}});
    let rich_cr = json!({
        "spec": {"configuration": {
            "additionalGuestMemoryOverheadRatio": "1.5",
            "network": {"binding": {"passt": {"computeResourceOverhead": {"requests": {"memory": "250Mi"}}}}}
        }},
        "status": {"observedKubeVirtVersion": "v1.8.1"}
    });
    vec![
        (
            "A: 4 vCPU, 8 GiB, defaults (KubeVirt v1.8, no ratio)",
            small,
            plain_cr,
            ("64Mi", "2Mi", "1.5"),
        ),
        (
            "B: 16 dedicated vCPU, 64 GiB guaranteed, headless, TPM, exec probe, passt plugin 250Mi, ratio 1.5 (KubeVirt v1.8)",
            big,
            rich_cr,
            ("64Mi", "2Mi", "1.5"),
        ),
    ]
}

// ---- properties -----------------------------------------------------------------------------

/// Arbitrary JSON, a few levels deep.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[-+0-9.eEinumkKMGTP]{0,12}".prop_map(Value::String),
        ".{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every path the model reads, to plant garbage at.
const PATHS: &[&[&str]] = &[
    &["spec"],
    &["spec", "domain"],
    &["spec", "domain", "resources"],
    &["spec", "domain", "resources", "requests"],
    &["spec", "domain", "resources", "requests", "memory"],
    &["spec", "domain", "resources", "requests", "cpu"],
    &["spec", "domain", "resources", "limits", "memory"],
    &["spec", "domain", "resources", "limits", "cpu"],
    &["spec", "domain", "resources", "overcommitGuestOverhead"],
    &["spec", "domain", "cpu"],
    &["spec", "domain", "cpu", "cores"],
    &["spec", "domain", "cpu", "sockets"],
    &["spec", "domain", "cpu", "threads"],
    &["spec", "domain", "cpu", "dedicatedCpuPlacement"],
    &["spec", "domain", "memory"],
    &["spec", "domain", "memory", "guest"],
    &["spec", "domain", "memory", "hugepages"],
    &[
        "spec",
        "domain",
        "memory",
        "reservedOverhead",
        "addedOverhead",
    ],
    &["spec", "domain", "devices"],
    &["spec", "domain", "devices", "autoattachGraphicsDevice"],
    &["spec", "domain", "devices", "gpus"],
    &["spec", "domain", "devices", "hostDevices"],
    &["spec", "domain", "devices", "interfaces"],
    &["spec", "domain", "devices", "tpm"],
    &["spec", "domain", "launchSecurity"],
    &["spec", "architecture"],
    &["spec", "volumes"],
    &["spec", "livenessProbe"],
    &["spec", "readinessProbe", "exec"],
    &["metadata", "annotations"],
];

fn garbage_vmi() -> impl Strategy<Value = Value> {
    prop::collection::vec((0..PATHS.len(), arb_json()), 0..8).prop_map(|plants| {
        let mut vmi = vmi_2gi();
        for (i, v) in plants {
            set(&mut vmi, PATHS[i], v);
        }
        vmi
    })
}

/// A well-formed VMI from sizes and flags.
#[derive(Clone, Debug)]
struct Shape {
    memory: u64,
    cores: u32,
    sockets: u32,
    threads: u32,
    flags: [bool; 9],
}

fn arb_shape() -> impl Strategy<Value = Shape> {
    (
        0_u64..=(64_u64 << 40),
        0_u32..=64,
        0_u32..=64,
        0_u32..=4,
        any::<[bool; 9]>(),
    )
        .prop_map(|(memory, cores, sockets, threads, flags)| Shape {
            memory,
            cores,
            sockets,
            threads,
            flags,
        })
}

fn shape_vmi(s: &Shape) -> Value {
    let mut vmi = test_vmi();
    set(
        &mut vmi,
        &["spec", "domain", "resources", "requests", "memory"],
        json!(s.memory.to_string()),
    );
    set(
        &mut vmi,
        &["spec", "domain", "cpu"],
        json!({"cores": s.cores, "sockets": s.sockets, "threads": s.threads}),
    );
    let f = s.flags;
    if !f[0] {
        set(
            &mut vmi,
            &["spec", "domain", "devices", "autoattachGraphicsDevice"],
            json!(false),
        );
    }
    if f[1] {
        set(&mut vmi, &["spec", "architecture"], json!("arm64"));
    }
    if f[2] {
        set(
            &mut vmi,
            &["spec", "domain", "devices", "gpus"],
            json!([{"name": "g", "deviceName": "nvidia.com/x"}]),
        );
    }
    if f[3] {
        set(
            &mut vmi,
            &["spec", "volumes"],
            json!([{"name": "m", "downwardMetrics": {}}]),
        );
    }
    if f[4] {
        set(&mut vmi, &["spec", "livenessProbe", "exec"], json!({}));
    }
    if f[5] {
        set(
            &mut vmi,
            &["spec", "domain", "launchSecurity", "sev"],
            json!({}),
        );
    }
    if f[6] {
        set(&mut vmi, &["spec", "domain", "devices", "tpm"], json!({}));
    }
    if f[7] {
        set(
            &mut vmi,
            &["spec", "domain", "cpu", "dedicatedCpuPlacement"],
            json!(true),
        );
    }
    if f[8] {
        set(&mut vmi, &["spec", "readinessProbe", "exec"], json!({}));
    }
    vmi
}

fn arb_model() -> impl Strategy<Value = OverheadModel> {
    prop_oneof![
        Just(OverheadModel::V1_5),
        Just(OverheadModel::V1_6),
        Just(OverheadModel::V1_9)
    ]
}

fn arb_ratio() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        (1_000_u32..=10_000).prop_map(|m| Some(format!("{}.{:03}", m / 1000, m % 1000)))
    ]
}

fn config(model: OverheadModel, ratio: Option<String>) -> KubeVirtMemoryConfig {
    KubeVirtMemoryConfig {
        model,
        additional_guest_memory_overhead_ratio: ratio,
        ..KubeVirtMemoryConfig::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn overhead_grows_with_memory(s in arb_shape(), extra in 0_u64..=(1_u64 << 40), model in arb_model(), ratio in arb_ratio()) {
        let kv = config(model, ratio);
        let bigger = Shape { memory: s.memory + extra, ..s.clone() };
        prop_assert!(total_with(&shape_vmi(&s), &kv) <= total_with(&shape_vmi(&bigger), &kv));
    }

    #[test]
    fn overhead_grows_with_vcpus(s in arb_shape(), dc in 0_u32..=64, ds in 0_u32..=64, model in arb_model(), ratio in arb_ratio()) {
        // Growing a non-zero count (zeros are skipped by GetNumberOfVCPUs).
        let kv = config(model, ratio);
        let base = Shape { cores: s.cores.max(1), sockets: s.sockets.max(1), threads: s.threads.max(1), ..s.clone() };
        let bigger = Shape { cores: base.cores + dc, sockets: base.sockets + ds, ..base.clone() };
        prop_assert!(vcpus(&shape_vmi(&base)) <= vcpus(&shape_vmi(&bigger)));
        prop_assert!(total_with(&shape_vmi(&base), &kv) <= total_with(&shape_vmi(&bigger), &kv));
    }

    #[test]
    fn overhead_grows_with_every_term(s in arb_shape(), i in 0_usize..9, model in arb_model(), ratio in arb_ratio()) {
        let kv = config(model, ratio);
        let mut off = s.clone();
        off.flags[i] = false;
        let mut on = s.clone();
        on.flags[i] = true;
        // flag 0 is "graphics on".
        prop_assert!(total_with(&shape_vmi(&off), &kv) <= total_with(&shape_vmi(&on), &kv), "flag {}", i);
    }

    #[test]
    fn overhead_grows_with_ratio(s in arb_shape(), a in 1_000_u32..=10_000, b in 0_u32..=10_000, model in arb_model()) {
        let r = |m: u32| Some(format!("{}.{:03}", m / 1000, m % 1000));
        let low = total_with(&shape_vmi(&s), &config(model, r(a)));
        let high = total_with(&shape_vmi(&s), &config(model, r(a + b)));
        let none = total_with(&shape_vmi(&s), &config(model, None));
        prop_assert!(none <= low && low <= high);
    }

    #[test]
    fn overhead_grows_with_plugins_and_reserved(s in arb_shape(), plugin in 0_u64..=(1 << 34), reserved in 0_u64..=(1 << 34)) {
        let mut vmi = shape_vmi(&s);
        let without = total(&vmi);
        set(&mut vmi, &["spec", "domain", "devices", "interfaces"], json!([{"name": "n", "binding": {"name": "p"}}]));
        set(&mut vmi, &["spec", "domain", "memory", "reservedOverhead", "addedOverhead"], json!(reserved.to_string()));
        let kv = KubeVirtMemoryConfig {
            network_binding_memory: [("p".to_string(), crate::quantity::Quantity::from_u64(plugin))].into_iter().collect(),
            ..KubeVirtMemoryConfig::default()
        };
        prop_assert_eq!(total_with(&vmi, &kv), without + plugin + reserved);
    }

    #[test]
    fn huge_vmis_do_not_overflow(memory in 0_u64..=u64::MAX, cores in 0_u32..=u32::MAX, sockets in 0_u32..=u32::MAX, threads in 0_u32..=u32::MAX, ratio in arb_ratio()) {
        let mut vmi = test_vmi();
        set(&mut vmi, &["spec", "domain", "resources", "requests", "memory"], json!(memory.to_string()));
        set(&mut vmi, &["spec", "domain", "memory", "guest"], json!(memory.to_string()));
        set(&mut vmi, &["spec", "domain", "cpu"], json!({"cores": cores, "sockets": sockets, "threads": threads}));
        let kv = config(OverheadModel::V1_6, ratio);
        let b = kubevirt_overhead(&vmi, &kv);
        prop_assert!(b.is_ok());
        let all = MshvTerms { fixed: u64::MAX / 2, per_vcpu: 1 << 30, guest_memory_ppm: 1_000_000 };
        let p = plan(&vmi, &kv, &all);
        prop_assert!(p.is_ok());
    }

    #[test]
    fn garbage_vmis_never_panic(vmi in garbage_vmi(), kv_cr in arb_json(), pod in arb_json(), index in 0_usize..3) {
        let _ = vcpus(&vmi);
        let _ = guest_memory_bytes(&vmi);
        let kv = KubeVirtMemoryConfig::from_kubevirt_cr(&kv_cr).unwrap_or_default();
        if let Ok(p) = plan(&vmi, &kv, &terms()) {
            let mut pod = pod;
            let _ = apply(&mut pod, index, &vmi, &p);
            let mut launcher = launcher_pod("2Gi", Some("2Gi"));
            let _ = apply(&mut launcher, 0, &vmi, &p);
        }
    }

    #[test]
    fn arbitrary_json_vmis_never_panic(vmi in arb_json()) {
        let _ = vcpus(&vmi);
        let _ = guest_memory_bytes(&vmi);
        let _ = kubevirt_overhead(&vmi, &KubeVirtMemoryConfig::default());
    }

    #[test]
    fn apply_twice_is_apply_once(
        s in arb_shape(),
        fixed in 0_u64..=(1 << 32),
        per_vcpu in 0_u64..=(1 << 26),
        ppm in 0_u64..=1_000_000,
        limit: bool,
        report: bool,
        overcommit: bool,
        hugepages: bool,
    ) {
        let mut vmi = shape_vmi(&s);
        if overcommit {
            set(&mut vmi, &["spec", "domain", "resources", "overcommitGuestOverhead"], json!(true));
        }
        if hugepages {
            set(&mut vmi, &["spec", "domain", "memory", "hugepages", "pageSize"], json!("1Gi"));
        }
        let t = MshvTerms { fixed, per_vcpu, guest_memory_ppm: ppm };
        let p = plan(&vmi, &KubeVirtMemoryConfig::default(), &t).unwrap();
        let kubevirt_total = p.kubevirt.as_ref().unwrap().total;
        let request = (s.memory + kubevirt_total).to_string();
        let mut pod = launcher_pod(&request, limit.then_some(request.as_str()));
        if report {
            pod["metadata"]["annotations"][KUBEVIRT_OVERHEAD_ANNOTATION] = json!(kubevirt_total.to_string());
        }
        let original = pod.clone();
        apply(&mut pod, 0, &vmi, &p).unwrap();
        let once = pod.clone();
        apply(&mut pod, 0, &vmi, &p).unwrap();
        prop_assert_eq!(&pod, &once);
        // The delta landed exactly once, where KubeVirt puts its overhead.
        let read = |v: &Value, list: &str| v["spec"]["containers"][0]["resources"][list]["memory"].as_str().map(|m| crate::quantity::parse(m).unwrap().to_u64_saturating());
        let expect_request = if hugepages || !overcommit { p.delta } else { 0 };
        prop_assert_eq!(read(&once, "requests"), read(&original, "requests").map(|r| r + expect_request));
        prop_assert_eq!(read(&once, "limits"), read(&original, "limits").map(|l| l + p.delta));
    }

    /// Nothing in the report (the KubeVirt CR's ratio, whether the CR could be read, what
    /// KubeVirt's own annotation holds) changes the delta or the Pod's resources.
    #[test]
    fn the_report_never_changes_the_edit(
        s in arb_shape(),
        ratio in arb_ratio_text(),
        kv_readable: bool,
        report in arb_report(),
        limit: bool,
        fixed in 0_u64..=(1 << 32),
        per_vcpu in 0_u64..=(1 << 26),
        ppm in 0_u64..=1_000_000,
    ) {
        let vmi = shape_vmi(&s);
        let t = MshvTerms { fixed, per_vcpu, guest_memory_ppm: ppm };
        let request = (s.memory + 300 * MI).to_string();
        let pod = launcher_pod(&request, limit.then_some(request.as_str()));

        let reference = plan(&vmi, &KubeVirtMemoryConfig::default(), &t);
        let kv = kv_with_ratio(&ratio);
        let unavailable = MemoryError::KubeVirtUnavailable { cause: "x".into() };
        let config = if kv_readable { Ok(&kv) } else { Err(&unavailable) };
        let other = plan_with(&vmi, config, &t);
        prop_assert_eq!(reference.as_ref().map(|p| p.delta), other.as_ref().map(|p| p.delta));
        let (Ok(reference), Ok(other)) = (reference, other) else { return Ok(()) };

        let mut a = pod.clone();
        apply(&mut a, 0, &vmi, &reference).unwrap();
        let mut b = pod.clone();
        if let Some(r) = report {
            b["metadata"]["annotations"][KUBEVIRT_OVERHEAD_ANNOTATION] = r;
        }
        let applied = apply(&mut b, 0, &vmi, &other);
        prop_assert!(applied.is_ok(), "{:?}", applied);
        prop_assert_eq!(&a["spec"], &b["spec"]);
        prop_assert_eq!(&a["metadata"]["annotations"][ADDED_ANNOTATION], &b["metadata"]["annotations"][ADDED_ANNOTATION]);
        // And the total is written exactly when it is known.
        let applied = applied.unwrap_or_default();
        prop_assert_eq!(
            b["metadata"]["annotations"].get(TOTAL_ANNOTATION).cloned(),
            applied.total.map(|t| json!(t.to_string()))
        );
    }

    #[test]
    fn mshv_delta_is_monotonic(
        fixed in any::<u64>(), per_vcpu in any::<u64>(), ppm in 0_u64..=1_000_000,
        vcpus in any::<u64>(), guest in any::<u64>(),
        d in any::<u64>(), which in 0_usize..5,
    ) {
        let t = MshvTerms { fixed, per_vcpu, guest_memory_ppm: ppm };
        let before = mshv_delta(&t, vcpus, guest);
        let mut t2 = t;
        let (mut v2, mut g2) = (vcpus, guest);
        match which {
            0 => t2.fixed = fixed.saturating_add(d),
            1 => t2.per_vcpu = per_vcpu.saturating_add(d),
            2 => t2.guest_memory_ppm = (ppm + d % 1_000_001).min(1_000_000),
            3 => v2 = vcpus.saturating_add(d),
            _ => g2 = guest.saturating_add(d),
        }
        prop_assert!(before <= mshv_delta(&t2, v2, g2));
    }

    #[test]
    fn mshv_percent_round_trips(int in 0_u64..=99, frac in 0_u64..10_000) {
        let s = format!("{int}.{frac:04}");
        prop_assert_eq!(MshvTerms::parse("0", "0", &s).map(|t| t.guest_memory_ppm), Ok(int * 10_000 + frac));
    }

    #[test]
    fn mshv_terms_parse_never_panics(a in ".{0,16}", b in "[-+0-9.eEinumkKMGTP]{0,12}", c in "[-+0-9.e%]{0,10}") {
        let _ = MshvTerms::parse(&a, &b, &c);
    }
}
