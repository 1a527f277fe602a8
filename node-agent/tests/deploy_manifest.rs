//! deploy/node-agent.yaml agrees with the binary: the DaemonSet's args parse with the
//! agent's own CLI, the probes hit the agent's routes on the metrics port, the host mounts
//! sit under --host-root (/dev read-write for --device-mode, /sys and /proc read-only),
//! kubelet's device plugin directory is mounted where --device-plugin-dir says, RBAC
//! grants exactly nodes get/patch plus leases get/create/patch in the agent's namespace,
//! and the Lease's namespace and holder come from the downward API.

use clap::Parser;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mshv_node_agent::cli::{Cli, Command};
use serde::Deserialize;

const MANIFEST: &str = include_str!("../../deploy/node-agent.yaml");

fn docs() -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(MANIFEST)
        .map(|d| serde_yaml::Value::deserialize(d).expect("valid YAML document"))
        .filter(|v| !v.is_null())
        .collect()
}

fn find<T: serde::de::DeserializeOwned>(kind: &str) -> T {
    let doc = docs()
        .into_iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind} in the manifest"));
    serde_yaml::from_value(doc).unwrap_or_else(|e| panic!("{kind} does not deserialize: {e}"))
}

#[test]
fn manifest_has_the_six_objects() {
    let kinds: Vec<String> = docs()
        .iter()
        .filter_map(|d| d["kind"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        kinds,
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "DaemonSet"
        ]
    );
    for d in docs() {
        if d["kind"] != "ClusterRole" && d["kind"] != "ClusterRoleBinding" {
            assert!(
                d["metadata"]["namespace"].is_null(),
                "namespaced objects stay namespace-agnostic"
            );
        }
    }
}

#[test]
fn rbac_is_nodes_get_patch_only() {
    let role: ClusterRole = find("ClusterRole");
    let rules = role.rules.expect("rules");
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0].resources.as_deref(),
        Some(&["nodes".to_string()][..])
    );
    assert_eq!(rules[0].verbs, ["get", "patch"]);
    let binding: ClusterRoleBinding = find("ClusterRoleBinding");
    let subject = &binding.subjects.expect("subjects")[0];
    assert_eq!(
        (subject.kind.as_str(), subject.name.as_str()),
        ("ServiceAccount", "mshv-node-agent")
    );
}

#[test]
fn lease_rbac_is_a_namespaced_role_for_leases_only() {
    let role: Role = find("Role");
    let rules = role.rules.expect("rules");
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0].api_groups.as_deref(),
        Some(&["coordination.k8s.io".to_string()][..])
    );
    assert_eq!(
        rules[0].resources.as_deref(),
        Some(&["leases".to_string()][..])
    );
    // patch: every renewal is a server-side apply; create: the first one creates it.
    assert_eq!(rules[0].verbs, ["get", "create", "patch"]);
    let binding: RoleBinding = find("RoleBinding");
    assert_eq!(binding.role_ref.kind, "Role");
    assert_eq!(Some(binding.role_ref.name), role.metadata.name);
    let subjects = binding.subjects.expect("subjects");
    assert_eq!(subjects.len(), 1);
    assert_eq!(
        (subjects[0].kind.as_str(), subjects[0].name.as_str()),
        ("ServiceAccount", "mshv-node-agent")
    );
    // Defaults to the binding's namespace, so the manifest applies to any namespace.
    assert_eq!(subjects[0].namespace, None);
}

#[test]
fn daemonset_matches_the_binary() {
    let ds: DaemonSet = find("DaemonSet");
    let pod = ds.spec.expect("spec").template.spec.expect("pod spec");
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    assert_eq!(pod.service_account_name.as_deref(), Some("mshv-node-agent"));
    let tolerations = pod.tolerations.expect("tolerations");
    assert!(
        tolerations
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists")
                && t.key.is_none()
                && t.effect.is_none())
    );

    let c = &pod.containers[0];
    let env = c.env.clone().expect("env");
    let node = env
        .iter()
        .find(|e| e.name == "NODE_NAME")
        .expect("NODE_NAME");
    let field = node
        .value_from
        .as_ref()
        .and_then(|v| v.field_ref.as_ref())
        .expect("fieldRef");
    assert_eq!(field.field_path, "spec.nodeName");
    let field_of = |name: &str| {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value_from.as_ref())
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.clone())
            .unwrap_or_else(|| panic!("{name} from a fieldRef"))
    };
    assert_eq!(field_of("POD_NAMESPACE"), "metadata.namespace");
    assert_eq!(field_of("POD_NAME"), "metadata.name");

    // The pod gets --node-name from the NODE_NAME env (clap `env`); stand in for it here.
    let args = c.args.clone().expect("args");
    let argv = std::iter::once("mshv-node-agent".to_string())
        .chain(args)
        .chain(["--node-name=from-downward-api".to_string()]);
    let cli = Cli::try_parse_from(argv).expect("the DaemonSet's args parse with the agent's CLI");
    let Command::Run(run) = cli.command else {
        panic!("the DaemonSet must run `run`")
    };
    let host_root = run.host.host_root.to_str().expect("utf8").to_string();
    assert!(run.heartbeat.is_none(), "--heartbeat is deprecated");
    assert!(run.lease.lease, "the manifest keeps the Lease");
    assert!(
        run.lease.lease_duration.0 > run.lease.lease_renew_interval.0,
        "the Lease must outlive one renew interval"
    );

    let sc = c.security_context.as_ref().expect("securityContext");
    assert_eq!(sc.privileged, Some(true));

    let mounts = c.volume_mounts.clone().expect("mounts");
    for host in ["/dev", "/sys", "/proc"] {
        let m = mounts
            .iter()
            .find(|m| m.mount_path == format!("{host_root}{host}"))
            .unwrap_or_else(|| panic!("{host} not mounted under --host-root {host_root}"));
        if host == "/dev" && run.device.access_policy().is_some() {
            // chmod of the host's /dev/mshv needs a writable mount (EROFS otherwise).
            assert_ne!(
                m.read_only,
                Some(true),
                "/dev must be writable for --device-mode"
            );
        } else {
            assert_eq!(m.read_only, Some(true), "{host} must be read-only");
        }
        let vol = pod
            .volumes
            .as_ref()
            .expect("volumes")
            .iter()
            .find(|v| v.name == m.name)
            .expect("volume");
        assert_eq!(vol.host_path.as_ref().map(|h| h.path.as_str()), Some(host));
    }

    assert!(
        run.device.device_plugin,
        "the manifest serves the device plugin"
    );
    let dp_dir = run
        .device
        .device_plugin_dir
        .to_str()
        .expect("utf8")
        .to_string();
    let m = mounts
        .iter()
        .find(|m| m.mount_path == dp_dir)
        .unwrap_or_else(|| panic!("--device-plugin-dir {dp_dir} is not mounted"));
    assert_ne!(
        m.read_only,
        Some(true),
        "the agent creates its socket there"
    );
    let vol = pod
        .volumes
        .as_ref()
        .expect("volumes")
        .iter()
        .find(|v| v.name == m.name)
        .expect("device plugin volume");
    assert_eq!(
        vol.host_path.as_ref().map(|h| h.path.as_str()),
        Some("/var/lib/kubelet/device-plugins")
    );
    assert_eq!(run.device.device_resource, "devices.kubevirt.io/mshv");

    let port = c
        .ports
        .as_ref()
        .expect("ports")
        .iter()
        .find(|p| p.name.as_deref() == Some("metrics"))
        .expect("metrics port");
    assert_eq!(port.container_port, i32::from(run.metrics_addr.port()));
    let http = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        let g = p
            .as_ref()
            .and_then(|p| p.http_get.clone())
            .expect("httpGet probe");
        assert_eq!(g.port, IntOrString::String("metrics".into()));
        g.path.expect("path")
    };
    assert_eq!(http(&c.liveness_probe), "/healthz");
    assert_eq!(http(&c.readiness_probe), "/readyz");

    let requests = c
        .resources
        .as_ref()
        .and_then(|r| r.requests.clone())
        .expect("requests");
    assert!(requests.contains_key("cpu") && requests.contains_key("memory"));
}
