//! Tests of the mshv memory step: the terms, what the delta reads from the VMI, the overhead
//! ratio, and the edit of the Pod. KubeVirt's own test expectations are named with their file
//! (paths in kubevirt/kubevirt).

use proptest::prelude::*;
use rstest::rstest;
use serde_json::{Value, json};

use super::mshv::mshv_delta;
use super::ratio::{self, RATIO_PATH};
use super::vmi::{guest_memory_bytes, vcpu_count};
use super::*;

const MI: u64 = 1 << 20;
const GI: u64 = 1 << 30;

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

/// A VMI with `spec.domain` as given.
fn vmi(domain: Value) -> Value {
    json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
           "metadata": {"name": "test-vmi"}, "spec": {"domain": domain}})
}

/// The VMI of the fixtures: 2Gi guest memory, one vCPU.
fn vmi_2gi() -> Value {
    vmi(json!({"cpu": {"sockets": 1, "cores": 1, "threads": 1},
                "memory": {"guest": "2Gi"},
                "resources": {"requests": {"memory": "2Gi"}}}))
}

fn terms() -> MshvTerms {
    MshvTerms::parse("64Mi", "2Mi", "1.5").unwrap()
}

/// 64Mi + 1 × 2Mi + ceil(2Gi × 1.5 %) = 69206016 + ceil(32212254.72).
const DELTA_2GI: u64 = 66 * MI + 32_212_255;

/// A virt-launcher Pod's relevant parts: the compute container first, a sidecar second.
fn launcher_pod(request: &str, limit: Option<&str>) -> Value {
    let mut resources = json!({"requests": {"cpu": "100m", "memory": request, "devices.kubevirt.io/kvm": "1"},
                               "limits": {"devices.kubevirt.io/kvm": "1"}});
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

fn memory<'p>(pod: &'p Value, list: &str) -> Option<&'p str> {
    pod["spec"]["containers"][0]["resources"][list]["memory"].as_str()
}

fn annotation<'p>(pod: &'p Value, key: &str) -> Option<&'p str> {
    pod["metadata"]["annotations"][key].as_str()
}

// ---- the terms ------------------------------------------------------------------------------

#[rstest]
#[case::all_three("64Mi", "2Mi", "1.5", MshvTerms { fixed: 64 * MI, per_vcpu: 2 * MI, guest_memory_ppm: 15_000 })]
#[case::zero("0", "0", "0", MshvTerms::default())]
#[case::hundred_percent("0", "0", "100", MshvTerms { guest_memory_ppm: 1_000_000, ..MshvTerms::default() })]
#[case::one_ppm("0", "0", "0.0001", MshvTerms { guest_memory_ppm: 1, ..MshvTerms::default() })]
#[case::leading_dot("0", "0", ".25", MshvTerms { guest_memory_ppm: 2_500, ..MshvTerms::default() })]
#[case::padded("0", "0", "007.50000", MshvTerms { guest_memory_ppm: 75_000, ..MshvTerms::default() })]
#[case::fractional_bytes_round_up("0.5", "1m", "0", MshvTerms { fixed: 1, per_vcpu: 1, guest_memory_ppm: 0 })]
fn terms_parse(
    #[case] fixed: &str,
    #[case] per_vcpu: &str,
    #[case] pct: &str,
    #[case] want: MshvTerms,
) {
    assert_eq!(MshvTerms::parse(fixed, per_vcpu, pct), Ok(want));
    assert_eq!(want.is_zero(), want == MshvTerms::default());
}

#[rstest]
#[case::not_a_quantity("lots", "0", "0", "fixed")]
#[case::negative_fixed("-1", "0", "0", "fixed")]
#[case::beyond_u64("1e30", "0", "0", "fixed")]
#[case::negative_per_vcpu("0", "-1Mi", "0", "perVcpu")]
#[case::empty_per_vcpu("0", "", "0", "perVcpu")]
#[case::above_100("0", "0", "101", "guestMemoryPercent")]
#[case::just_above_100("0", "0", "100.0001", "guestMemoryPercent")]
#[case::thousand("0", "0", "1000", "guestMemoryPercent")]
#[case::negative_percent("0", "0", "-1", "guestMemoryPercent")]
#[case::exponent("0", "0", "1e1", "guestMemoryPercent")]
#[case::too_precise("0", "0", "1.23456", "guestMemoryPercent")]
#[case::empty_percent("0", "0", "", "guestMemoryPercent")]
#[case::lone_dot("0", "0", ".", "guestMemoryPercent")]
#[case::percent_sign("0", "0", "1%", "guestMemoryPercent")]
fn terms_refused_name_the_field(
    #[case] fixed: &str,
    #[case] per_vcpu: &str,
    #[case] pct: &str,
    #[case] field: &str,
) {
    let e = MshvTerms::parse(fixed, per_vcpu, pct).unwrap_err();
    assert_eq!(e.field(), field);
    assert!(e.to_string().contains(&format!("{:?}", e.value)), "{e}");
}

#[rstest]
// 64Mi + 4 × 2Mi + ceil(8Gi × 1.5 %) = 72Mi + ceil(128849018.88).
#[case::worked(terms(), 4, 8 * GI, 72 * MI + 128_849_019)]
#[case::zero_terms(MshvTerms::default(), 1000, u64::MAX, 0)]
#[case::saturates(MshvTerms { fixed: u64::MAX, per_vcpu: u64::MAX, guest_memory_ppm: 1_000_000 }, u64::MAX, u64::MAX, u64::MAX)]
#[case::whole_guest(MshvTerms { guest_memory_ppm: 1_000_000, ..MshvTerms::default() }, 1, 12345, 12345)]
fn delta_formula(#[case] t: MshvTerms, #[case] vcpus: u64, #[case] guest: u64, #[case] want: u64) {
    assert_eq!(mshv_delta(&t, vcpus, guest), want);
}

// ---- what the delta reads from the VMI -----------------------------------------------------

#[rstest]
#[case::topology(json!({"cpu": {"sockets": 2, "cores": 3, "threads": 2}}), 12)]
#[case::zeros_skipped(json!({"cpu": {"sockets": 0, "cores": 4, "threads": 0}}), 4)]
#[case::empty_topology_is_one(json!({"cpu": {}}), 1)]
#[case::uint32_wraps(json!({"cpu": {"sockets": 65536, "cores": 65536}}), 1)]
#[case::limit_before_request(json!({"resources": {"limits": {"cpu": "3"}, "requests": {"cpu": "2"}}}), 3)]
#[case::request_rounds_up(json!({"resources": {"requests": {"cpu": "1500m"}}}), 2)]
#[case::nothing_is_one(json!({}), 1)]
fn vcpus_as_kubevirt_counts_them(#[case] domain: Value, #[case] want: u64) {
    assert_eq!(vcpu_count(&vmi(domain)), Ok(want));
}

#[rstest]
#[case::topology_not_uint32(json!({"cpu": {"cores": -1}}), "spec.domain.cpu.cores")]
#[case::cpu_not_an_object(json!({"cpu": 4}), "spec.domain.cpu")]
#[case::limit_not_a_quantity(json!({"resources": {"limits": {"cpu": "lots"}}}), "spec.domain.resources.limits.cpu")]
fn vcpus_undecodable(#[case] domain: Value, #[case] path: &str) {
    let e = vcpu_count(&vmi(domain)).unwrap_err();
    assert!(e.to_string().starts_with(path), "{e}");
}

#[rstest]
#[case::guest_first(json!({"memory": {"guest": "2Gi"}, "resources": {"requests": {"memory": "3Gi"}, "limits": {"memory": "4Gi"}}}), 2 * GI)]
#[case::request_before_limit(json!({"resources": {"requests": {"memory": "3Gi"}, "limits": {"memory": "4Gi"}}}), 3 * GI)]
#[case::limit_without_request(json!({"resources": {"limits": {"memory": "4Gi"}}}), 4 * GI)]
#[case::rounds_up(json!({"memory": {"guest": "1.5"}}), 2)]
fn guest_memory_as_the_converter_sizes_it(#[case] domain: Value, #[case] want: u64) {
    // pkg/virt-launcher/virtwrap/converter/vcpu/vcpu.go GetVirtualMemory.
    assert_eq!(guest_memory_bytes(&vmi(domain)), Ok(want));
}

#[rstest]
#[case::none(json!({}), MemoryError::MissingGuestMemory)]
#[case::negative(json!({"memory": {"guest": "-1Gi"}}), MemoryError::NegativeQuantity { path: "spec.domain.memory.guest".into(), value: "-1073741824".into() })]
fn guest_memory_unreadable(#[case] domain: Value, #[case] want: MemoryError) {
    assert_eq!(guest_memory_bytes(&vmi(domain)), Err(want));
}

#[test]
fn delta_reads_only_what_its_terms_need() {
    // With no per-vCPU term a broken CPU topology does not matter, nor missing memory without
    // a percentage.
    let broken = vmi(json!({"cpu": {"cores": "four"}}));
    let fixed_only = MshvTerms::parse("64Mi", "0", "0").unwrap();
    assert_eq!(delta(&broken, &fixed_only, None), Ok(64 * MI));
    assert!(delta(&broken, &MshvTerms::parse("0", "1Mi", "0").unwrap(), None).is_err());
    assert_eq!(
        delta(&broken, &MshvTerms::parse("0", "0", "1").unwrap(), None),
        Err(MemoryError::MissingGuestMemory)
    );
    assert_eq!(delta(&vmi_2gi(), &terms(), None), Ok(DELTA_2GI));
}

// ---- the overhead ratio --------------------------------------------------------------------

fn kv(ratio: Value) -> Value {
    json!({"spec": {"configuration": {"additionalGuestMemoryOverheadRatio": ratio}}})
}

#[rstest]
#[case::unset(json!({"spec": {"configuration": {}}}), None)]
#[case::empty(kv(json!("")), None)]
#[case::null(kv(json!(null)), None)]
#[case::one_and_a_half(kv(json!("1.5")), Some(1.5))]
#[case::integer(kv(json!("2")), Some(2.0))]
#[case::exponent(kv(json!("1.25e0")), Some(1.25))]
#[case::leading_dot(kv(json!(".5")), Some(0.5))]
#[case::trailing_dot(kv(json!("3.")), Some(3.0))]
fn ratio_read_from_the_cr(#[case] cr: Value, #[case] want: Option<f64>) {
    assert_eq!(ratio::from_kubevirt_cr(&cr), Ok(want));
}

#[rstest]
#[case::not_a_float(json!("abc"))]
#[case::nan(json!("NaN"))]
#[case::infinity(json!("Inf"))]
#[case::hexadecimal(json!("0x1p0"))]
#[case::underscores(json!("1_5"))]
#[case::overflows(json!("1e400"))]
#[case::bare_exponent(json!("1e"))]
#[case::number_not_string(json!(1.5))]
fn ratio_other_than_plain_decimal_names_the_field(#[case] ratio: Value) {
    let e = ratio::from_kubevirt_cr(&kv(ratio)).unwrap_err();
    assert!(e.to_string().starts_with(RATIO_PATH), "{e}");
}

#[rstest]
#[case::no_ratio(1_000_000, None, 1_000_000)]
#[case::one(1_000_000, Some(1.0), 1_000_000)]
// MultiplyMemory: 1000 kB × 0.5 = 500 kB more.
#[case::one_and_a_half(1_000_000, Some(1.5), 1_500_000)]
// ScaledValue(Kilo) rounds 1 byte up to 1 kB; int64(1 × 0.5) truncates to 0.
#[case::kilo_rounding(1, Some(1.5), 1)]
// ceil(1500 / 1000) = 2 kB; 2 × 1.5 = 3 kB more.
#[case::rounds_up_then_truncates(1500, Some(2.5), 4500)]
// A ratio below 1 (KubeVirt applies it at runtime) shrinks the delta, but never
// goes below zero.
#[case::below_one(1_000_000, Some(0.5), 500_000)]
#[case::negative_clamps(1_000_000, Some(-3.0), 0)]
#[case::zero_delta(0, Some(2.0), 0)]
fn ratio_scales_as_multiply_memory(#[case] d: u64, #[case] r: Option<f64>, #[case] want: u64) {
    assert_eq!(ratio::scale(d, r), Ok(want));
}

#[rstest]
#[case::beyond_int64(u64::MAX, Some(1.0))]
#[case::product_beyond_int64(1 << 40, Some(1e300))]
#[case::scaled_beyond_int64(1 << 62, Some(3.0))]
fn ratio_out_of_go_range(#[case] d: u64, #[case] r: Option<f64>) {
    assert!(matches!(
        ratio::scale(d, r),
        Err(MemoryError::Overflow { .. })
    ));
}

// ---- the edit of the Pod -------------------------------------------------------------------

#[test]
fn apply_adds_the_delta_once_and_touches_nothing_else() {
    let vmi = vmi_2gi();
    let mut pod = launcher_pod("2432696320", Some("2432696320"));
    assert_eq!(apply(&mut pod, 0, &vmi, DELTA_2GI), Ok(vec![]));
    let expected = (2_432_696_320 + DELTA_2GI).to_string();
    assert_eq!(memory(&pod, "requests"), Some(expected.as_str()));
    assert_eq!(memory(&pod, "limits"), Some(expected.as_str()));
    assert_eq!(
        annotation(&pod, ADDED_ANNOTATION),
        Some(DELTA_2GI.to_string().as_str())
    );
    // No report on the Pod: none is invented.
    assert_eq!(annotation(&pod, KUBEVIRT_OVERHEAD_ANNOTATION), None);
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

    let once = pod.clone();
    apply(&mut pod, 0, &vmi, DELTA_2GI).unwrap();
    assert_eq!(pod, once);
}

/// Where the delta goes, as KubeVirt places its overhead: renderresources_test.go
/// Context("WithMemoryOverhead option") ("the specified overhead is added to the user requested
/// VM memory"; "the overhead is *only* added to the VM's limits, not requests" with
/// overcommitGuestOverhead) and WithHugePages (the memory request holds the overhead whatever
/// overcommitGuestOverhead says).
#[rstest]
#[case::request_and_limit(json!({}), Some("64M"), "192000000", Some("192000000"))]
#[case::no_limit_invented(json!({}), None, "192000000", None)]
#[case::overcommit_limit_only(json!({"resources": {"overcommitGuestOverhead": true}}), Some("64M"), "64M", Some("192000000"))]
#[case::hugepages_ignore_overcommit(json!({"memory": {"hugepages": {"pageSize": "2Mi"}}, "resources": {"overcommitGuestOverhead": true}}), None, "192000000", None)]
fn apply_follows_kubevirts_placement(
    #[case] domain: Value,
    #[case] limit: Option<&str>,
    #[case] request_after: &str,
    #[case] limit_after: Option<&str>,
) {
    let mut pod = launcher_pod("64M", limit);
    apply(&mut pod, 0, &vmi(domain), 128_000_000).unwrap();
    assert_eq!(memory(&pod, "requests"), Some(request_after));
    assert_eq!(memory(&pod, "limits"), limit_after);
}

/// KubeVirt's own report (`kubevirt.io/memory-overhead-bytes`) moves with the delta, in
/// KubeVirt's format, whatever release wrote it; one it cannot have written is left alone.
#[rstest]
// v1.8/v1.9 default QemuOverhead 30Mi: 2Gi VMI -> 285212672; main (50Mi): 306184192.
#[case::v1_9_report("285212672", Some(285_212_672 + DELTA_2GI as i64), None)]
#[case::main_report("306184192", Some(306_184_192 + DELTA_2GI as i64), None)]
// A ratio below 1 can make KubeVirt write a negative figure: it moves by the delta too.
#[case::negative_report("-1048576", Some(DELTA_2GI as i64 - 1_048_576), None)]
#[case::signed("+5", Some(5 + DELTA_2GI as i64), None)]
#[case::quantity_not_written_by_kubevirt("272Mi", None, Some("\"272Mi\""))]
#[case::beyond_int64("9223372036854775807", None, Some("\"9223372036854775807\""))]
fn apply_moves_kubevirts_report(
    #[case] report: &str,
    #[case] after: Option<i64>,
    #[case] issue_value: Option<&str>,
) {
    let mut pod = launcher_pod("2432696320", None);
    pod["metadata"]["annotations"][KUBEVIRT_OVERHEAD_ANNOTATION] = json!(report);
    let issues = apply(&mut pod, 0, &vmi_2gi(), DELTA_2GI).unwrap();
    let after = after.map(|a| a.to_string());
    assert_eq!(
        annotation(&pod, KUBEVIRT_OVERHEAD_ANNOTATION),
        Some(after.as_deref().unwrap_or(report))
    );
    let want: Vec<ReportIssue> = issue_value
        .map(|v| ReportIssue::KubeVirtReportUnchanged { value: v.into() })
        .into_iter()
        .collect();
    assert_eq!(issues, want);
    // The request moves either way: the report never changes the edit.
    assert_eq!(
        memory(&pod, "requests"),
        Some((2_432_696_320 + DELTA_2GI).to_string().as_str())
    );
}

#[test]
fn apply_adjusts_to_a_changed_delta() {
    let vmi = vmi_2gi();
    let mut pod = launcher_pod("2432696320", None);
    pod["metadata"]["annotations"][KUBEVIRT_OVERHEAD_ANNOTATION] = json!("285212672");
    apply(&mut pod, 0, &vmi, DELTA_2GI).unwrap();
    // A smaller delta later takes the difference back, from the request and the report.
    apply(&mut pod, 0, &vmi, MI).unwrap();
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
    let mut pod = launcher_pod("2Gi", Some("2Gi"));
    apply(&mut pod, 0, &vmi_2gi(), 0).unwrap();
    assert_eq!(memory(&pod, "requests"), Some("2Gi"));
    assert_eq!(memory(&pod, "limits"), Some("2Gi"));
    assert_eq!(annotation(&pod, ADDED_ANNOTATION), Some("0"));
}

#[test]
fn apply_creates_a_missing_request() {
    let vmi = vmi_2gi();
    let mut pod = json!({"spec": {"containers": [{"name": "compute"}]}});
    apply(&mut pod, 0, &vmi, DELTA_2GI).unwrap();
    assert_eq!(
        memory(&pod, "requests"),
        Some(DELTA_2GI.to_string().as_str())
    );
    let once = pod.clone();
    apply(&mut pod, 0, &vmi, DELTA_2GI).unwrap();
    assert_eq!(pod, once);
}

fn with_annotation(mut pod: Value, key: &str, value: Value) -> Value {
    pod["metadata"]["annotations"][key] = value;
    pod
}

#[rstest]
#[case::request_not_a_quantity(
    launcher_pod("lots", None),
    0,
    vmi_2gi(),
    "spec.containers[0].resources.requests.memory"
)]
#[case::negative_limit(
    launcher_pod("2Gi", Some("-1")),
    0,
    vmi_2gi(),
    "spec.containers[0].resources.limits.memory"
)]
#[case::no_such_container(launcher_pod("2Gi", None), 5, vmi_2gi(), "spec.containers[5]")]
#[case::added_not_a_count(with_annotation(launcher_pod("2Gi", None), ADDED_ANNOTATION, json!("12x")), 0, vmi_2gi(), ADDED_ANNOTATION)]
#[case::added_more_than_the_request(with_annotation(launcher_pod("2Gi", None), ADDED_ANNOTATION, json!("99999999999999")), 0, vmi_2gi(), "spec.containers[0].resources.requests.memory")]
#[case::annotations_not_an_object({let mut p = launcher_pod("2Gi", None); p["metadata"]["annotations"] = json!("x"); p}, 0, vmi_2gi(), "metadata.annotations")]
#[case::vmi_carries_ours(launcher_pod("2Gi", None), 0, {let mut v = vmi_2gi(); set(&mut v, &["metadata", "annotations", ADDED_ANNOTATION], json!("0")); v}, ADDED_ANNOTATION)]
#[case::not_a_pod(json!("not a pod"), 0, vmi_2gi(), "spec.containers[0]")]
fn apply_errors_leave_the_pod_untouched(
    #[case] pod: Value,
    #[case] index: usize,
    #[case] vmi: Value,
    #[case] named: &str,
) {
    let mut edited = pod.clone();
    let e = apply(&mut edited, index, &vmi, DELTA_2GI).unwrap_err();
    assert_eq!(edited, pod, "changed on error");
    assert!(e.to_string().contains(named), "{e}");
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

/// Every path the step reads, to plant garbage at.
const PATHS: &[&[&str]] = &[
    &["spec"],
    &["spec", "domain"],
    &["spec", "domain", "resources"],
    &["spec", "domain", "resources", "requests", "memory"],
    &["spec", "domain", "resources", "requests", "cpu"],
    &["spec", "domain", "resources", "limits", "memory"],
    &["spec", "domain", "resources", "limits", "cpu"],
    &["spec", "domain", "resources", "overcommitGuestOverhead"],
    &["spec", "domain", "cpu"],
    &["spec", "domain", "cpu", "cores"],
    &["spec", "domain", "memory", "guest"],
    &["spec", "domain", "memory", "hugepages"],
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

proptest! {
    #[test]
    fn garbage_never_panics(vmi in garbage_vmi(), kv_cr in arb_json(), pod in arb_json(), index in 0_usize..3) {
        let r = ratio::from_kubevirt_cr(&kv_cr).unwrap_or(None);
        if let Ok(d) = delta(&vmi, &terms(), r) {
            let mut pod = pod;
            let _ = apply(&mut pod, index, &vmi, d);
            let mut launcher = launcher_pod("2Gi", Some("2Gi"));
            let _ = apply(&mut launcher, 0, &vmi, d);
        }
    }

    #[test]
    fn apply_twice_is_apply_once(
        guest in 1_u64..=(1 << 40),
        d in 0_u64..=(1 << 40),
        limit: bool,
        report: bool,
        overcommit: bool,
        hugepages: bool,
    ) {
        let mut vmi = vmi_2gi();
        set(&mut vmi, &["spec", "domain", "memory", "guest"], json!(guest.to_string()));
        if overcommit {
            set(&mut vmi, &["spec", "domain", "resources", "overcommitGuestOverhead"], json!(true));
        }
        if hugepages {
            set(&mut vmi, &["spec", "domain", "memory", "hugepages", "pageSize"], json!("1Gi"));
        }
        let request = (guest + 300 * MI).to_string();
        let mut pod = launcher_pod(&request, limit.then_some(request.as_str()));
        if report {
            pod["metadata"]["annotations"][KUBEVIRT_OVERHEAD_ANNOTATION] = json!((300 * MI).to_string());
        }
        let original = pod.clone();
        apply(&mut pod, 0, &vmi, d).unwrap();
        let once = pod.clone();
        apply(&mut pod, 0, &vmi, d).unwrap();
        prop_assert_eq!(&pod, &once);
        // The delta landed exactly once, where KubeVirt puts its overhead.
        let read = |v: &Value, list: &str| v["spec"]["containers"][0]["resources"][list]["memory"]
            .as_str().map(|m| crate::quantity::parse(m).unwrap().to_u64_saturating());
        let expect_request = if hugepages || !overcommit { d } else { 0 };
        prop_assert_eq!(read(&once, "requests"), read(&original, "requests").map(|r| r + expect_request));
        prop_assert_eq!(read(&once, "limits"), read(&original, "limits").map(|l| l + d));
        let report_after = once["metadata"]["annotations"][KUBEVIRT_OVERHEAD_ANNOTATION].as_str().map(str::to_string);
        prop_assert_eq!(report_after, report.then(|| (300 * MI + d).to_string()));
    }

    #[test]
    fn ratio_scaling_is_monotonic(d in 0_u64..=(1 << 50), a in 0_u32..=10_000, b in 0_u32..=10_000) {
        let (lo, hi) = (f64::from(a.min(b)) / 1000.0, f64::from(a.max(b)) / 1000.0);
        prop_assert!(ratio::scale(d, Some(lo)).unwrap() <= ratio::scale(d, Some(hi)).unwrap());
        // At or above 1 the delta never shrinks; below, never below zero (u64).
        if lo >= 1.0 {
            prop_assert!(ratio::scale(d, Some(lo)).unwrap() >= d);
        }
    }

    #[test]
    fn plain_decimal_ratios_parse_as_rust_does(int in 0_u32..=100, frac in 0_u32..=9999) {
        let s = format!("{int}.{frac:04}");
        let want: f64 = s.parse().unwrap();
        prop_assert_eq!(ratio::from_kubevirt_cr(&kv(json!(s))), Ok(Some(want)));
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
