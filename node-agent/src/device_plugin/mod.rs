//! `/dev/mshv` as a kubelet device plugin (API v1beta1), so a node gets
//! `status.allocatable["devices.kubevirt.io/mshv"]` even where virt-handler does not serve
//! that device (a KVM-configured KubeVirt, or the fork builds).
//!
//! Modelled on KubeVirt's generic device plugin (kubevirt/kubevirt
//! pkg/virt-handler/device-manager/generic_device.go): N shared IDs, all Healthy or all
//! Unhealthy together, `Allocate` hands out the one device node. Health follows the probe
//! (`capable`), not the mere existence of the node.
//!
//! - [`service`]: the gRPC `DevicePlugin` service kubelet calls.
//! - [`registration`]: dialling `kubelet.sock` and `Register`.
//! - [`lifecycle`]: serve, register, watch for kubelet restarts and for virt-handler, repeat.
//!
//! The pure pieces below (device list, `Allocate` and preferred-allocation answers, socket
//! names) are what the tests pin down.

pub mod lifecycle;
pub mod registration;
pub mod service;

/// Generated from node-agent/proto/deviceplugin_v1beta1.proto (see that file's header).
#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub mod api {
    pub mod v1beta1 {
        include!("api/v1beta1.rs");
    }
}

use std::path::{Path, PathBuf};
use std::time::Duration;

use api::v1beta1::{
    AllocateRequest, AllocateResponse, ContainerAllocateResponse,
    ContainerPreferredAllocationRequest, ContainerPreferredAllocationResponse, Device,
    DevicePluginOptions, DeviceSpec, PreferredAllocationRequest, PreferredAllocationResponse,
};

/// `pluginapi.Version` (kubevirt/kubevirt
/// pkg/virt-handler/device-manager/deviceplugin/v1beta1/constants.go:26).
pub const API_VERSION: &str = "v1beta1";
/// `pluginapi.DevicePluginPath` (same file, line 30).
pub const DEFAULT_DIR: &str = "/var/lib/kubelet/device-plugins";
/// kubelet's registration socket in that directory (same file, line 32).
pub const KUBELET_SOCKET: &str = "kubelet.sock";
pub const HEALTHY: &str = "Healthy";
pub const UNHEALTHY: &str = "Unhealthy";

/// The resource virt-handler serves for mshv (`devices.kubevirt.io/` + the hypervisor
/// device name, pkg/virt-handler/device-manager/generic_device.go:84 with
/// pkg/hypervisor/mshv/hypervisorbackend.go:44).
pub const DEFAULT_RESOURCE: &str = vocab::MSHV_DEVICE_RESOURCE;
/// virt-handler's `--max-devices` default (kubevirt/kubevirt
/// cmd/virt-handler/virt-handler.go:113), which it uses for its hypervisor device plugin
/// (pkg/virt-handler/vm.go:240): the same count keeps a node's capacity identical whoever
/// serves it.
pub const DEFAULT_DEVICES: u32 = 1000;
/// The device node, the same path on the host and in the container.
pub const DEVICE_PATH: &str = "/dev/mshv";
/// Device cgroup permissions. virt-handler uses "rw", and "rwm" on cgroup v2 because runc's
/// eBPF device filter otherwise denies `access(2)` probes (pkg/virt-handler/vm.go:224-234);
/// "rwm" works on both.
pub const PERMISSIONS: &str = "rwm";

/// What the device plugin is doing (`mshv_node_agent_device_plugin_state{state}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginState {
    Registered,
    WaitingForKubelet,
    DeferredToVirtHandler,
    Disabled,
    Error,
}

impl PluginState {
    pub const ALL: [PluginState; 5] = [
        PluginState::Registered,
        PluginState::WaitingForKubelet,
        PluginState::DeferredToVirtHandler,
        PluginState::Disabled,
        PluginState::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PluginState::Registered => "registered",
            PluginState::WaitingForKubelet => "waiting-for-kubelet",
            PluginState::DeferredToVirtHandler => "deferred-to-virt-handler",
            PluginState::Disabled => "disabled",
            PluginState::Error => "error",
        }
    }
}

/// How the plugin is set up (from the command line).
#[derive(Debug, Clone)]
pub struct PluginConfig {
    /// kubelet's device-plugins directory (`kubelet.sock` and every plugin socket).
    pub dir: PathBuf,
    pub resource: String,
    pub devices: u32,
    /// Path of the device in the container and on the host (kubelet's view: no host root).
    pub device_path: PathBuf,
    /// How often to look for kubelet.sock, our own socket and virt-handler's socket.
    pub poll: Duration,
    /// How often to dial an existing virt-handler socket to see whether it is live (between
    /// dials its existence alone counts): keeps the agent from opening a connection to
    /// virt-handler every `poll`.
    pub virt_handler_recheck: Duration,
    /// Registration retries: the agent's capped exponential backoff.
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// Bound on dialling kubelet and on one Register call.
    pub register_timeout: Duration,
}

impl PluginConfig {
    pub fn new(dir: PathBuf, resource: String, devices: u32) -> Self {
        Self {
            dir,
            resource,
            devices,
            device_path: PathBuf::from(DEVICE_PATH),
            poll: Duration::from_secs(1),
            virt_handler_recheck: Duration::from_secs(10),
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(120),
            register_timeout: Duration::from_secs(10),
        }
    }

    /// The device name: the part of the resource after the `/` (`mshv`).
    pub fn device_name(&self) -> &str {
        device_name(&self.resource)
    }

    pub fn socket_name(&self) -> String {
        socket_name(&self.resource)
    }

    pub fn socket_path(&self) -> PathBuf {
        self.dir.join(self.socket_name())
    }

    pub fn kubelet_socket(&self) -> PathBuf {
        self.dir.join(KUBELET_SOCKET)
    }

    pub fn virt_handler_socket(&self) -> PathBuf {
        self.dir.join(virt_handler_socket_name(&self.resource))
    }
}

pub fn device_name(resource: &str) -> &str {
    resource.rsplit('/').next().unwrap_or(resource)
}

/// Our socket's name. virt-handler names its sockets `kubevirt-<device>.sock`
/// (pkg/virt-handler/device-manager/common.go:261-262); ours never starts with
/// `kubevirt-`, so the two can never collide or remove each other's socket.
pub fn socket_name(resource: &str) -> String {
    format!("mshv-node-agent-{}.sock", device_name(resource))
}

/// The socket virt-handler creates when it serves `resource`:
/// `SocketPath(deviceName)` = `kubevirt-<device>.sock` (common.go:261-262, called from
/// `NewGenericDevicePlugin`, generic_device.go:75-76), `kubevirt-mshv.sock` for mshv.
pub fn virt_handler_socket_name(resource: &str) -> String {
    format!("kubevirt-{}.sock", device_name(resource))
}

/// The options the plugin announces (at registration and on request).
pub fn options() -> DevicePluginOptions {
    DevicePluginOptions {
        pre_start_required: false,
        get_preferred_allocation_available: true,
    }
}

/// Device IDs `<device><i>` for i in 0..n, as virt-handler numbers them
/// (generic_device.go:91-97): `mshv0` .. `mshv999`.
pub fn device_ids(resource: &str, n: u32) -> impl Iterator<Item = String> + '_ {
    let name = device_name(resource);
    (0..n).map(move |i| format!("{name}{i}"))
}

/// The full device list, all with the same health (one shared device node).
pub fn device_list(resource: &str, n: u32, healthy: bool) -> Vec<Device> {
    let health = if healthy { HEALTHY } else { UNHEALTHY };
    device_ids(resource, n)
        .map(|id| Device {
            id,
            health: health.to_string(),
            topology: None,
        })
        .collect()
}

/// Is `id` one of the IDs this plugin advertises?
pub fn is_known_id(resource: &str, n: u32, id: &str) -> bool {
    id.strip_prefix(device_name(resource))
        .filter(|rest| !rest.starts_with('0') || *rest == "0")
        .and_then(|rest| rest.parse::<u32>().ok())
        .is_some_and(|i| i < n)
}

/// Why an `Allocate` request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocateError {
    #[error("device ID {0:?} is not one this plugin advertises")]
    UnknownDevice(String),
    #[error("a container request names no device")]
    NoDevices,
}

/// The answer to `Allocate`: for every container, the one device node, whatever the
/// number of IDs (they all stand for the same shared `/dev/mshv`), as virt-handler's
/// `Allocate` does (generic_device.go:239-254).
pub fn allocate_response(
    resource: &str,
    n: u32,
    device_path: &Path,
    req: &AllocateRequest,
) -> Result<AllocateResponse, AllocateError> {
    let path = device_path.display().to_string();
    let mut out = AllocateResponse::default();
    for container in &req.container_requests {
        if container.devices_ids.is_empty() {
            return Err(AllocateError::NoDevices);
        }
        if let Some(bad) = container
            .devices_ids
            .iter()
            .find(|id| !is_known_id(resource, n, id))
        {
            return Err(AllocateError::UnknownDevice(bad.clone()));
        }
        out.container_responses.push(ContainerAllocateResponse {
            devices: vec![DeviceSpec {
                container_path: path.clone(),
                host_path: path.clone(),
                permissions: PERMISSIONS.to_string(),
            }],
            ..Default::default()
        });
    }
    Ok(out)
}

/// The answer to `GetPreferredAllocation`: the must-include IDs first, then available ones
/// in kubelet's order, up to `allocation_size`. Every ID is the same shared node, so there
/// is no topology to prefer; being deterministic is what matters.
pub fn preferred_allocation(req: &PreferredAllocationRequest) -> PreferredAllocationResponse {
    PreferredAllocationResponse {
        container_responses: req
            .container_requests
            .iter()
            .map(preferred_for_container)
            .collect(),
    }
}

fn preferred_for_container(
    c: &ContainerPreferredAllocationRequest,
) -> ContainerPreferredAllocationResponse {
    let size = usize::try_from(c.allocation_size.max(0)).unwrap_or(0);
    let mut ids: Vec<String> = Vec::with_capacity(size);
    for id in c
        .must_include_device_i_ds
        .iter()
        .chain(c.available_device_i_ds.iter())
    {
        if ids.len() >= size {
            break;
        }
        if !ids.contains(id) {
            ids.push(id.clone());
        }
    }
    ContainerPreferredAllocationResponse { device_i_ds: ids }
}

#[cfg(test)]
mod tests {
    use super::api::v1beta1::ContainerAllocateRequest;
    use super::*;

    #[test]
    fn names_match_kubevirt_and_never_collide() {
        assert_eq!(
            virt_handler_socket_name(DEFAULT_RESOURCE),
            "kubevirt-mshv.sock"
        );
        assert_eq!(socket_name(DEFAULT_RESOURCE), "mshv-node-agent-mshv.sock");
        assert!(!socket_name(DEFAULT_RESOURCE).starts_with("kubevirt-"));
        assert_eq!(device_name("example.com/x"), "x");
    }

    #[test]
    fn ids_are_known_only_in_range_and_canonical() {
        let r = DEFAULT_RESOURCE;
        assert!(is_known_id(r, 1000, "mshv0"));
        assert!(is_known_id(r, 1000, "mshv999"));
        assert!(!is_known_id(r, 1000, "mshv1000"));
        assert!(!is_known_id(r, 1000, "mshv01"));
        assert!(!is_known_id(r, 1000, "kvm0"));
        assert!(!is_known_id(r, 1000, "mshv"));
        assert_eq!(device_ids(r, 1000).count(), 1000);
        assert!(device_ids(r, 1000).all(|id| is_known_id(r, 1000, &id)));
    }

    #[test]
    fn allocate_gives_exactly_dev_mshv_rwm_per_container() {
        let req = AllocateRequest {
            container_requests: vec![
                ContainerAllocateRequest {
                    devices_ids: vec!["mshv3".into()],
                },
                ContainerAllocateRequest {
                    devices_ids: vec!["mshv4".into(), "mshv5".into()],
                },
            ],
        };
        let resp = allocate_response(DEFAULT_RESOURCE, 1000, Path::new(DEVICE_PATH), &req).unwrap();
        assert_eq!(resp.container_responses.len(), 2);
        for c in &resp.container_responses {
            assert_eq!(
                c.devices,
                [DeviceSpec {
                    container_path: "/dev/mshv".into(),
                    host_path: "/dev/mshv".into(),
                    permissions: "rwm".into(),
                }]
            );
            assert!(c.mounts.is_empty() && c.envs.is_empty() && c.cdi_devices.is_empty());
        }
        let bad = AllocateRequest {
            container_requests: vec![ContainerAllocateRequest {
                devices_ids: vec!["kvm0".into()],
            }],
        };
        assert_eq!(
            allocate_response(DEFAULT_RESOURCE, 1000, Path::new(DEVICE_PATH), &bad),
            Err(AllocateError::UnknownDevice("kvm0".into()))
        );
    }

    #[test]
    fn preferred_allocation_takes_must_include_first() {
        let req = PreferredAllocationRequest {
            container_requests: vec![ContainerPreferredAllocationRequest {
                available_device_i_ds: vec!["mshv1".into(), "mshv2".into(), "mshv3".into()],
                must_include_device_i_ds: vec!["mshv3".into()],
                allocation_size: 2,
            }],
        };
        let resp = preferred_allocation(&req);
        assert_eq!(resp.container_responses[0].device_i_ds, ["mshv3", "mshv1"]);
    }
}
