//! Every VM, mapping and fd the bench makes is released, on success and on error paths:
//! the process's open fds and memory mappings are counted before and after. One test in
//! this file, so no other test's fds or mappings come and go meanwhile.

use std::path::Path;
use std::time::Duration;

use mshv_node_agent::bench::{self, BenchConfig, HypervisorKind, Options, open_device};
use mshv_node_agent::guest_verify;

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn maps() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count()
}

fn cfg(root: &Path, lock: &Path, only: HypervisorKind) -> BenchConfig {
    let mut cfg = BenchConfig::new(root.to_path_buf());
    cfg.only = vec![only];
    cfg.lock_path = lock.to_path_buf();
    cfg.options = Options {
        reps: 3,
        min_run: Duration::from_micros(200),
        max_loop: 1_000,
        pages: 4,
        budget: Duration::from_secs(60),
    };
    cfg
}

#[test]
fn nothing_is_left_open_or_mapped() {
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("bench.lock");
    // A fake root whose "dev/kvm" and "dev/mshv" are /dev/null: they open, and every
    // hypervisor ioctl fails (ENOTTY) — the error paths after open.
    let fake = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(fake.path().join("dev")).unwrap();
    let null_ok = ["kvm", "mshv"]
        .iter()
        .all(|d| std::os::unix::fs::symlink("/dev/null", fake.path().join("dev").join(d)).is_ok());
    assert!(null_ok);
    let kvm = open_device(Path::new("/"), HypervisorKind::Kvm).is_ok();
    if !kvm {
        eprintln!("SKIP the real-KVM half: /dev/kvm cannot be opened here");
    }

    let everything = || {
        if kvm {
            let r = bench::run(&cfg(Path::new("/"), &lock, HypervisorKind::Kvm)).unwrap();
            assert_eq!(r.hypervisors[0].result, "ok", "{:?}", r.hypervisors[0]);
            let v = guest_verify::verify(Path::new("/"), HypervisorKind::Kvm, &lock).unwrap();
            assert!(v.verified);
        }
        for kind in [HypervisorKind::Kvm, HypervisorKind::Mshv] {
            let r = bench::run(&cfg(fake.path(), &lock, kind)).unwrap();
            let row = &r.hypervisors[0];
            assert_ne!(row.result, "ok", "{row:?}");
            assert_eq!(row.errno_name.as_deref(), Some("ENOTTY"), "{row:?}");
            let v = guest_verify::verify(fake.path(), kind, &lock).unwrap();
            assert!(!v.verified);
            assert_eq!(v.errno_name.as_deref(), Some("ENOTTY"));
        }
    };
    // Warm up (the allocator, the lazily opened files of std) before counting.
    everything();
    let (f0, m0) = (fds(), maps());
    for _ in 0..3 {
        everything();
    }
    assert_eq!(fds(), f0, "open fds");
    assert_eq!(maps(), m0, "memory mappings");
}
