//! Applying a decision to the Pod: the memory step (the mshv delta, which may still turn the
//! decision into a fallback), then the device, scheduling and record edits, then the answer.

use serde_json::Value;

use crate::choice::{Hypervisor, Reason};
use crate::cluster::LookupError;
use crate::decision::{self, Decision, DeviceEdit, Facts, Verdict};
use crate::facts::HostFacts;
use crate::launcher::Launcher;
use crate::memory::{self, MshvTerms};
use crate::mutate::{self, EditError};
use crate::pod_doc::PodDoc;
use crate::policy::{Answer, accept, reject};
use crate::settings::Settings;

/// Applies a decision: memory first (it may still turn the decision into a fallback), then the
/// Pod edits, then the answer. The edits go to the Pod's view, which holds every part they read
/// or write.
pub(crate) fn apply_decision<'a>(
    mut pod: PodDoc<'a>,
    launcher: &Launcher,
    settings: &Settings,
    mut d: Decision,
    facts: &mut HostFacts,
) -> Answer<'a> {
    let terms = match settings.mshv_terms() {
        Ok(t) => t,
        Err(e) => return accept(vec![format!("hyperv-layered: {e}; left unchanged")]),
    };
    let mut changed = false;
    // A layout the policy does not know is left exactly as rendered: no memory edit either
    // (an mshv-rendered launcher would otherwise still get the delta).
    let as_rendered = d.reason == Reason::LauncherLayoutUnknown;
    if d.hypervisor == Hypervisor::Mshv && !as_rendered && !terms.is_zero() {
        match add_mshv_memory(&mut pod.view, launcher, &terms, facts) {
            Ok((c, report_warnings)) => {
                changed = c;
                // What could not be done to KubeVirt's report: told, never a fallback.
                d.warnings.extend(report_warnings);
            }
            // A failed memory step leaves the Pod as it was (memory::apply is all or nothing).
            // A lookup that failed is the request's lookup error (per-Pod mode can still fall
            // back, or retry with onLookupError: reject): an mshv Pod sized without its
            // overhead is exactly what the memory settings exist to prevent.
            Err(MemoryStepError::Lookup(e)) if d.switch.is_some() => {
                match decision::on_lookup_error(settings, launcher, &e) {
                    Verdict::Decided(fallback) => {
                        d = Decision {
                            seen: d.seen,
                            ..fallback
                        }
                    }
                    Verdict::Reject(r) => return reject(r.message),
                    Verdict::Unchanged => return accept(Vec::new()),
                }
            }
            // Data the step cannot size (the VMI, the KubeVirt CR's ratio, the Pod's own
            // resources) is no lookup error: retrying would not change it, so it never rejects.
            // The Pod stays as rendered, with its own reason. In cluster-mshv mode (no switch)
            // "as rendered" is mshv: KubeVirt renders mshv cluster-wide, there is no KVM to
            // fall back to, and the reason tells the Pod is unsized.
            Err(e) => {
                let warning = format!(
                    "hyperv-layered: mshv memory overhead not added to VMI {}/{}: {e}; {}",
                    launcher.namespace,
                    launcher.vmi_name,
                    if d.switch.is_some() {
                        "left as rendered"
                    } else {
                        "KubeVirt renders mshv cluster-wide, the Pod runs on mshv without it"
                    }
                );
                if d.switch.is_some() {
                    d = Decision {
                        hypervisor: launcher.rendered,
                        reason: Reason::MemoryUnsized,
                        switch: None,
                        require_capable_node: false,
                        warnings: Vec::new(),
                        seen: d.seen,
                    };
                } else {
                    d.reason = Reason::MemoryUnsized;
                }
                d.warnings.push(warning);
            }
        }
    }
    match edit(&mut pod.view, launcher, settings, &d) {
        Ok(c) => changed |= c,
        Err(e) => return accept(vec![format!("hyperv-layered: {e}; left unchanged")]),
    }
    let mut answer = accept(d.warnings);
    answer.choice = Some((d.hypervisor, d.reason));
    if changed {
        answer.mutated = Some(pod);
    }
    answer
}

/// The Pod edits of a decision; true when the Pod changed.
fn edit(
    pod: &mut Value,
    launcher: &Launcher,
    settings: &Settings,
    d: &Decision,
) -> Result<bool, EditError> {
    let mut changed = match d.switch {
        None => false,
        Some(DeviceEdit::Replace) => mutate::switch_to_mshv(
            pod,
            launcher.compute_index,
            launcher.hypervisor_flag,
            &settings.kvm_device_resource,
            &settings.device_resource,
            &settings.hypervisor_arg,
        )?,
        Some(DeviceEdit::Add) => mutate::add_mshv_device(
            pod,
            launcher.compute_index,
            launcher.hypervisor_flag,
            &settings.device_resource,
            &settings.hypervisor_arg,
        )?,
    };
    if d.require_capable_node {
        changed |= mutate::require_node_label(pod, &settings.node_label)?;
    }
    Ok(mutate::write_choice(pod, d.hypervisor, d.reason)? | changed)
}

/// Why the memory step left the Pod as it was.
#[derive(Debug, thiserror::Error)]
enum MemoryStepError {
    /// The KubeVirt CR (its overhead ratio) or the VMI could not be read.
    #[error(transparent)]
    Lookup(LookupError),
    /// What was read cannot be sized: a VMI, ratio or Pod value the step does not understand.
    #[error(transparent)]
    Unsized(memory::MemoryError),
}

/// Adds the mshv delta to the Pod: true when the Pod changed, with the warnings about
/// KubeVirt's report.
///
/// The KubeVirt CR is read first (for `additionalGuestMemoryOverheadRatio`), then the VMI (its
/// vCPUs and guest memory); in `kubevirt` gate mode the CR is the one the gate already read.
fn add_mshv_memory(
    pod: &mut Value,
    launcher: &Launcher,
    terms: &MshvTerms,
    facts: &mut HostFacts,
) -> Result<(bool, Vec<String>), MemoryStepError> {
    let kv = facts.kubevirt().map_err(MemoryStepError::Lookup)?;
    let ratio = memory::ratio::from_kubevirt_cr(kv).map_err(MemoryStepError::Unsized)?;
    // The same read as the mixed-mode workload rule's, if that made one: one GET per request.
    let vmi = facts.vmi(launcher).map_err(MemoryStepError::Lookup)?;
    let delta = memory::delta(vmi, terms, ratio).map_err(MemoryStepError::Unsized)?;
    // apply() edits only the annotations and the compute container's resources: compare those
    // rather than a copy of the whole Pod.
    let resources = format!("/spec/containers/{}/resources", launcher.compute_index);
    let before = (
        pod.pointer("/metadata/annotations").cloned(),
        pod.pointer(&resources).cloned(),
    );
    let issues =
        memory::apply(pod, launcher.compute_index, vmi, delta).map_err(MemoryStepError::Unsized)?;
    let changed = before.0.as_ref() != pod.pointer("/metadata/annotations")
        || before.1.as_ref() != pod.pointer(&resources);
    let warnings = issues
        .iter()
        .map(|issue| {
            format!(
                "hyperv-layered: VMI {}/{}: {issue}",
                launcher.namespace, launcher.vmi_name
            )
        })
        .collect();
    Ok((changed, warnings))
}
