//! What the decision may ask of the cluster, answered through host calls: each lookup is made
//! at most once per request (the live-migration rule, the workload rule and the memory step
//! share the VMI read; the gate and the memory step share the KubeVirt CR read), and counted
//! for the decision log.

use serde_json::Value;
use std::cell::Cell;

use crate::choice::Hypervisor;
use crate::cluster::{self, Host, LookupError};
use crate::decision::{self, Facts};
use crate::launcher::Launcher;
use crate::settings::Settings;

/// Counts the lookups of one request, for the decision log.
pub(crate) struct CountingHost<'h> {
    inner: &'h dyn Host,
    calls: Cell<u32>,
}

impl<'h> CountingHost<'h> {
    pub(crate) fn new(inner: &'h dyn Host) -> Self {
        CountingHost {
            inner,
            calls: Cell::new(0),
        }
    }

    /// The lookups made so far.
    pub(crate) fn calls(&self) -> u32 {
        self.calls.get()
    }
}

impl Host for CountingHost<'_> {
    fn call(&self, operation: &str, request: &[u8]) -> Result<Vec<u8>, String> {
        self.calls.set(self.calls.get().saturating_add(1));
        self.inner.call(operation, request)
    }
}

/// The decision's view of the cluster through host calls, each made at most once per request.
pub(crate) struct HostFacts<'h> {
    host: &'h dyn Host,
    settings: &'h Settings,
    kubevirt: Option<Result<Value, LookupError>>,
    capable: Option<Result<bool, LookupError>>,
    vmi: Option<Result<Value, LookupError>>,
}

impl<'h> HostFacts<'h> {
    pub(crate) fn new(host: &'h dyn Host, settings: &'h Settings) -> Self {
        HostFacts {
            host,
            settings,
            kubevirt: None,
            capable: None,
            vmi: None,
        }
    }

    /// The launcher's VMI, read once per request (the live-migration rule, the workload rule
    /// and the memory step all use it).
    pub(crate) fn vmi(&mut self, l: &Launcher) -> Result<&Value, LookupError> {
        let host = self.host;
        match self
            .vmi
            .get_or_insert_with(|| cluster::vmi(host, &l.namespace, &l.vmi_name))
        {
            Ok(v) => Ok(v),
            Err(e) => Err(e.clone()),
        }
    }
}

impl Facts for HostFacts<'_> {
    fn kubevirt(&mut self) -> Result<&Value, LookupError> {
        let (host, settings) = (self.host, self.settings);
        match self
            .kubevirt
            .get_or_insert_with(|| cluster::kubevirt_cr(host, settings))
        {
            Ok(kv) => Ok(kv),
            Err(e) => Err(e.clone()),
        }
    }

    fn has_capable_node(&mut self) -> Result<bool, LookupError> {
        let (host, settings) = (self.host, self.settings);
        self.capable
            .get_or_insert_with(|| cluster::first_capable_node(host, settings).map(|n| n.is_some()))
            .clone()
    }

    fn migration_source(&mut self, l: &Launcher) -> Result<Option<Hypervisor>, LookupError> {
        let job = l.migration_job.as_deref().unwrap_or_default();
        cluster::migration_source(self.host, self.settings, &l.namespace, &l.vmi_uid, job)
    }

    fn eviction_strategy(&mut self, l: &Launcher) -> Result<Option<String>, LookupError> {
        if let Some(s) = decision::vmi_eviction_strategy(self.vmi(l)?) {
            return Ok(Some(s.to_string()));
        }
        Ok(decision::cluster_eviction_strategy(self.kubevirt()?).map(str::to_string))
    }

    fn unsupported_workload(&mut self, l: &Launcher) -> Result<bool, LookupError> {
        Ok(decision::unsupported_workload(self.vmi(l)?))
    }
}
