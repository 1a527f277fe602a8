//! `mshv-node-agent bench` and `probe --run-guest` as a process: absent devices, a device
//! the user may not open (EACCES), a device that refuses (ENOTTY), a held lock, and a real
//! KVM run where /dev/kvm opens.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_mshv-node-agent");

fn agent(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("HOST_ROOT")
        .output()
        .expect("run binary")
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("no JSON ({e}): {}", text(o)))
}

#[test]
fn absent_devices_are_reported_with_one_line_each_and_exit_1() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_str().unwrap();
    let out = agent(&["bench", "--host-root", r]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains(&format!(
            "kvm: unavailable ({r}/dev/kvm): {r}/dev/kvm: absent"
        )),
        "{t}"
    );
    assert!(
        t.contains(&format!(
            "mshv: unavailable ({r}/dev/mshv): {r}/dev/mshv: absent"
        )),
        "{t}"
    );
    assert!(t.contains("no hypervisor ran a guest"), "{t}");

    let out = agent(&["bench", "--json", "--host-root", r]);
    assert_eq!(out.status.code(), Some(1));
    let j = json(&out);
    let rows = j["hypervisors"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert_eq!(row["result"], "unavailable");
        assert!(row["reason"].as_str().unwrap().ends_with(": absent"));
        assert!(row.get("scenarios").is_none());
    }
    assert_eq!(j["ratios"], Value::Array(vec![]));
}

#[test]
fn a_device_that_refuses_is_named_with_its_errno() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("dev")).unwrap();
    // /dev/null opens read-write and answers every hypervisor ioctl with ENOTTY.
    for d in ["kvm", "mshv"] {
        std::os::unix::fs::symlink("/dev/null", root.path().join("dev").join(d)).unwrap();
    }
    let r = root.path().to_str().unwrap();
    let out = agent(&["bench", "--json", "--host-root", r]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let j = json(&out);
    assert_eq!(
        j["hypervisors"][0]["reason"],
        "KVM_GET_SUPPORTED_CPUID: ENOTTY (the hypervisor refused)"
    );
    assert_eq!(
        j["hypervisors"][1]["reason"],
        "create partition (host partition properties, MSHV_ROOT_HVCALL): ENOTTY (the hypervisor refused)"
    );
    assert_eq!(j["hypervisors"][1]["errno_name"], "ENOTTY");

    // probe --run-guest: the guest did not run, said in the table and in JSON.
    let out = agent(&["probe", "--run-guest", "--host-root", r]);
    assert!(
        text(&out).contains("guest run: FAILED: create partition (host partition properties, MSHV_ROOT_HVCALL): ENOTTY"),
        "{}",
        text(&out)
    );
    let out = agent(&["probe", "--json", "--run-guest", "--host-root", r]);
    let j = json(&out);
    assert_eq!(j["guest_verification"]["verified"], false);
    assert_eq!(j["guest_verification"]["run"]["errno_name"], "ENOTTY");
    assert_ne!(out.status.code(), Some(0));
}

#[test]
fn probe_run_guest_without_a_device_is_not_tried() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_str().unwrap();
    let out = agent(&["probe", "--json", "--run-guest", "--host-root", r]);
    let j = json(&out);
    assert_eq!(j["guest_verification"]["verified"], Value::Null);
    assert!(
        j["guest_verification"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("not tried:")
    );
    // Without the flag nothing is tried and nothing is printed about it.
    let out = agent(&["probe", "--json", "--host-root", r]);
    assert!(json(&out).get("guest_verification").is_none());
}

#[test]
fn permission_denied_names_eacces() {
    // Only root can make the device node and start the child as another uid.
    if !nix_is_root() {
        eprintln!("SKIP permission_denied_names_eacces: needs root (mknod, setuid child)");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dev = root.path().join("dev");
    std::fs::create_dir_all(&dev).unwrap();
    std::fs::set_permissions(&dev, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A copy of /dev/kvm's node (10:232), root-only like the host's.
    let made = Command::new("mknod")
        .args(["-m", "0600"])
        .arg(dev.join("kvm"))
        .args(["c", "10", "232"])
        .status()
        .is_ok_and(|s| s.success());
    if !made {
        eprintln!("SKIP permission_denied_names_eacces: mknod failed");
        return;
    }
    let r = root.path().to_str().unwrap();
    let out = Command::new(BIN)
        .args(["bench", "--json", "--hypervisor", "kvm", "--host-root", r])
        .arg("--lock-file")
        .arg(std::env::temp_dir().join(format!("bench-cli-{}.lock", std::process::id())))
        .env_remove("HOST_ROOT")
        .uid(65534)
        .gid(65534)
        .output();
    let out = match out {
        Ok(o) if !o.stdout.is_empty() => o,
        other => {
            eprintln!("SKIP permission_denied_names_eacces: uid 65534 cannot run {BIN}: {other:?}");
            return;
        }
    };
    let j = json(&out);
    assert_eq!(out.status.code(), Some(1), "{j}");
    assert_eq!(j["hypervisors"][0]["result"], "unavailable");
    assert_eq!(j["hypervisors"][0]["errno_name"], "EACCES");
    assert!(
        j["hypervisors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("open: EACCES (file mode"),
        "{j}"
    );
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        .unwrap_or(false)
}

#[test]
fn a_held_lock_exits_3() {
    let root = tempfile::tempdir().unwrap();
    let lock = root.path().join("run/mshv-node-agent/bench.lock");
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    let f = std::fs::File::create(&lock).unwrap();
    f.try_lock().unwrap();
    let out = agent(&["bench", "--host-root", root.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("another bench is running on this node"));
}

#[test]
fn kvm_bench_as_a_process() {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        eprintln!("SKIP kvm_bench_as_a_process: /dev/kvm cannot be opened");
        return;
    }
    let lock = tempfile::tempdir().unwrap();
    let lock = lock.path().join("l");
    let out = agent(&[
        "bench",
        "--json",
        "--hypervisor",
        "kvm",
        "--reps",
        "5",
        "--max-loop",
        "2000",
        "--pages",
        "8",
        "--budget",
        "60s",
        "--lock-file",
        lock.to_str().unwrap(),
    ]);
    let j = json(&out);
    assert_eq!(out.status.code(), Some(0), "{j}");
    let row = &j["hypervisors"][0];
    assert_eq!(row["hypervisor"], "kvm");
    assert_eq!(row["result"], "ok");
    let names: Vec<&str> = row["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["scenario"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "create-to-first-exit",
            "exit-to-vmm",
            "exit-in-hypervisor",
            "guest-compute",
            "memory-first-touch"
        ]
    );
}
