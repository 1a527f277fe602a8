//! A fake hypervisor for the driver's tests: it interprets the payload's snippets (counts,
//! ports, hlt) and advances a fake clock by configured costs, so the arithmetic can be
//! checked exactly; it counts live VMs and scratch maps, and fails where told to.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use super::backend::{BenchError, Exit, GuestVm, Hypervisor, HypervisorKind};
use super::driver::Clock;
use super::payload;

#[derive(Debug, Clone, Default)]
pub struct FakeClock(pub Rc<Cell<Duration>>);

impl FakeClock {
    pub fn advance(&self, d: Duration) {
        self.0.set(self.0.get() + d);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Duration {
        self.0.get()
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Costs {
    pub create: Duration,
    pub pio: Duration,
    pub cpuid: Duration,
    pub compute: Duration,
    pub touch: Duration,
}

/// Where to fail.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    None,
    /// The n-th `create_vm` (0-based) is refused with this errno.
    Create(usize, i32),
    /// The n-th `run` (0-based, over all VMs) returns this exit instead.
    Run(usize, Exit),
    /// The n-th `map_scratch` is refused.
    Map(usize),
}

#[derive(Debug)]
pub struct FakeHv {
    pub clock: FakeClock,
    pub costs: Costs,
    pub fault: Fault,
    pub live_vms: Rc<Cell<i64>>,
    pub live_maps: Rc<Cell<i64>>,
    pub creates: Cell<usize>,
    pub runs: Rc<Cell<usize>>,
    pub maps: Rc<Cell<usize>>,
    /// Every (entry, rcx) the driver entered, in order.
    pub entered: Rc<RefCell<Vec<(u64, u64)>>>,
}

impl FakeHv {
    pub fn new(costs: Costs) -> Self {
        Self {
            clock: FakeClock::default(),
            costs,
            fault: Fault::None,
            live_vms: Rc::default(),
            live_maps: Rc::default(),
            creates: Cell::new(0),
            runs: Rc::default(),
            maps: Rc::default(),
            entered: Rc::default(),
        }
    }
}

pub struct FakeVm {
    clock: FakeClock,
    costs: Costs,
    fault: Fault,
    live_vms: Rc<Cell<i64>>,
    live_maps: Rc<Cell<i64>>,
    runs: Rc<Cell<usize>>,
    maps: Rc<Cell<usize>>,
    entered: Rc<RefCell<Vec<(u64, u64)>>>,
    entry: u64,
    rcx: u64,
    /// The counted snippets: false until their one `out`, then `hlt`.
    out_done: bool,
    scratch: bool,
}

impl Drop for FakeVm {
    fn drop(&mut self) {
        self.live_vms.set(self.live_vms.get() - 1);
        if self.scratch {
            self.live_maps.set(self.live_maps.get() - 1);
        }
    }
}

impl Hypervisor for FakeHv {
    type Vm = FakeVm;

    fn kind(&self) -> HypervisorKind {
        HypervisorKind::Kvm
    }

    fn create_vm(&self, image: &[u8]) -> Result<FakeVm, BenchError> {
        assert_eq!(image, payload::image().as_slice());
        let n = self.creates.get();
        self.creates.set(n + 1);
        if let Fault::Create(at, errno) = self.fault
            && at == n
        {
            return Err(BenchError::Refused {
                op: "create VM (fake)",
                errno,
            });
        }
        self.clock.advance(self.costs.create);
        self.live_vms.set(self.live_vms.get() + 1);
        Ok(FakeVm {
            clock: self.clock.clone(),
            costs: self.costs,
            fault: self.fault.clone(),
            live_vms: Rc::clone(&self.live_vms),
            live_maps: Rc::clone(&self.live_maps),
            runs: Rc::clone(&self.runs),
            maps: Rc::clone(&self.maps),
            entered: Rc::clone(&self.entered),
            entry: 0,
            rcx: 0,
            out_done: false,
            scratch: false,
        })
    }
}

impl GuestVm for FakeVm {
    fn enter(&mut self, entry: u64, rcx: u64) -> Result<(), BenchError> {
        self.entered.borrow_mut().push((entry, rcx));
        self.entry = entry;
        self.rcx = rcx;
        self.out_done = false;
        Ok(())
    }

    fn run(&mut self) -> Result<Exit, BenchError> {
        let n = self.runs.get();
        self.runs.set(n + 1);
        if let Fault::Run(at, exit) = &self.fault
            && *at == n
        {
            return Ok(exit.clone());
        }
        let c = self.costs;
        let times = |d: Duration, k: u64| d * u32::try_from(k).unwrap_or(u32::MAX);
        let (per, port) = match self.entry {
            e if e == payload::EXIT_TO_VMM.entry => {
                if self.rcx == 0 {
                    return Ok(Exit::Hlt);
                }
                self.rcx -= 1;
                self.clock.advance(c.pio);
                return Ok(Exit::IoOut {
                    port: payload::EXIT_TO_VMM.port,
                });
            }
            e if e == payload::EXIT_IN_HYPERVISOR.entry => {
                (c.cpuid, payload::EXIT_IN_HYPERVISOR.port)
            }
            e if e == payload::GUEST_COMPUTE.entry => (c.compute, payload::GUEST_COMPUTE.port),
            e if e == payload::FIRST_TOUCH.entry => {
                if !self.scratch {
                    return Ok(Exit::Other("fake: MMIO exit (no scratch map)".into()));
                }
                (c.touch, payload::FIRST_TOUCH.port)
            }
            other => return Ok(Exit::Other(format!("fake: bad entry {other:#x}"))),
        };
        if self.out_done {
            return Ok(Exit::Hlt);
        }
        self.out_done = true;
        self.clock.advance(times(per, self.rcx));
        Ok(Exit::IoOut { port })
    }

    fn map_scratch(&mut self, _gpa: u64, _pages: u64) -> Result<(), BenchError> {
        self.unmap_scratch()?;
        let n = self.maps.get();
        self.maps.set(n + 1);
        if self.fault == Fault::Map(n) {
            return Err(BenchError::Refused {
                op: "map (fake)",
                errno: libc::ENOMEM,
            });
        }
        self.scratch = true;
        self.live_maps.set(self.live_maps.get() + 1);
        Ok(())
    }

    fn unmap_scratch(&mut self) -> Result<(), BenchError> {
        if self.scratch {
            self.scratch = false;
            self.live_maps.set(self.live_maps.get() - 1);
        }
        Ok(())
    }
}
