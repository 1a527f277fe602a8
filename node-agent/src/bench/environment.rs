//! What a hypervisor device is on this machine, from files under the host root: the
//! kernel modules in `/sys/module` and the CPU flags in `/proc/cpuinfo`. Rows of the bench
//! carry it so a software-virtualized KVM is never mistaken for hardware (or nested) KVM.

use std::path::Path;

use super::backend::HypervisorKind;

/// kvm_pvm: "PVM" runs KVM guests without VMX/SVM (software, paravirtualized), e.g. in a
/// Firecracker microVM booted with `nested_pvm=1`.
pub const KVM_PVM: &str =
    "kvm_pvm: software nested virtualization in a microVM (no vmx/svm; not nested KVM on Azure)";

pub fn describe(host_root: &Path, kind: HypervisorKind) -> String {
    let module = |m: &str| host_root.join("sys/module").join(m).exists();
    let flags = cpu_flags(host_root);
    let under_hypervisor = flags.iter().any(|f| f == "hypervisor");
    match kind {
        HypervisorKind::Kvm => {
            let hw = flags.iter().any(|f| f == "vmx" || f == "svm");
            let base = if module("kvm_pvm") && !hw {
                KVM_PVM.to_string()
            } else if module("kvm_intel") {
                "kvm_intel (VMX)".to_string()
            } else if module("kvm_amd") {
                "kvm_amd (SVM)".to_string()
            } else if module("kvm_pvm") {
                "kvm_pvm".to_string()
            } else {
                "kvm (module unknown)".to_string()
            };
            if under_hypervisor && !base.starts_with("kvm_pvm") {
                format!("{base}, nested: this kernel runs under a hypervisor")
            } else {
                base
            }
        }
        HypervisorKind::Mshv => {
            if module("mshv_root") {
                "mshv_root (Microsoft Hypervisor root or L1VH partition)".to_string()
            } else {
                "mshv".to_string()
            }
        }
    }
}

fn cpu_flags(host_root: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(host_root.join("proc/cpuinfo")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("flags"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, f)| f.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_kvm_pvm_and_hardware_kvm() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("sys/module/kvm_pvm")).unwrap();
        std::fs::create_dir_all(root.path().join("proc")).unwrap();
        std::fs::write(
            root.path().join("proc/cpuinfo"),
            "flags\t\t: fpu hypervisor\n",
        )
        .unwrap();
        assert_eq!(describe(root.path(), HypervisorKind::Kvm), KVM_PVM);
        std::fs::remove_dir(root.path().join("sys/module/kvm_pvm")).unwrap();
        std::fs::create_dir_all(root.path().join("sys/module/kvm_intel")).unwrap();
        std::fs::write(
            root.path().join("proc/cpuinfo"),
            "flags\t\t: fpu vmx hypervisor\n",
        )
        .unwrap();
        assert_eq!(
            describe(root.path(), HypervisorKind::Kvm),
            "kvm_intel (VMX), nested: this kernel runs under a hypervisor"
        );
    }
}
