//! Egress policies of sandboxes, the runtime's side: a sandbox's recorded policy
//! ([`NetworkPolicy`] in its spec, plus `allow_internet`) is installed in nftables at
//! create, resume and fork, removed at kill, and replaced by [`RuncRuntime::set_network`]
//! on a running or paused sandbox. The rules themselves are in [`crate::net`].
//!
//! Domain names in `allow_out` are resolved with the host's resolver whenever the policy
//! is installed: strictly at create and `set_network` (a name that does not resolve is
//! refused), leniently at resume and fork (it is left out with a warning, so a name that
//! stopped resolving does not keep a sandbox paused).

use stasis_types::SandboxId;

use super::{write_json_durable, RuncRuntime};
use crate::error::{Cause, Context, Result, Step};
use crate::net::{self, NetworkPolicy, ResolvedPolicy};
use crate::spec::{Record, SandboxInfo};

impl RuncRuntime {
    /// Installs the policy recorded in `rec` for its address (atomically replacing any
    /// earlier one). `strict`: a name in `allow_out` that does not resolve is an error.
    pub(super) fn apply_network_policy(&self, rec: &Record, strict: bool) -> Result<(), Cause> {
        let resolved = ResolvedPolicy::resolve(&rec.spec.network, strict)?;
        net::apply_policy(
            &self.cfg.network,
            &rec.spec.id,
            rec.address,
            rec.spec.allow_internet,
            &resolved,
        )
    }

    /// Removes every nftables object of the sandbox's policy. Idempotent.
    pub(super) fn remove_network_policy(
        &self,
        id: &SandboxId,
        rec: Option<&Record>,
    ) -> Result<(), Cause> {
        net::remove_policy(&self.cfg.network, id, rec.map(|r| r.address))
    }

    /// Replaces a sandbox's egress rules: internet access and the allow and deny lists
    /// (E2B's `PUT /sandboxes/{id}/network`, which replaces the whole configuration). A
    /// running sandbox gets them at once, for new connections and for packets of
    /// established ones; a paused one at its resume. The sandbox's `resolv.conf` follows
    /// the internet switch. Names are resolved first: if one does not resolve, nothing
    /// changes.
    pub fn set_network(
        &self,
        id: &SandboxId,
        allow_internet: bool,
        policy: NetworkPolicy,
    ) -> Result<SandboxInfo> {
        let _guard = self.claim(id)?;
        let (p, mut rec) = self.record(id)?;
        let resolved = ResolvedPolicy::resolve(&policy, true).at(id, Step::Network)?;
        let internet_changed = rec.spec.allow_internet != allow_internet;
        rec.spec.allow_internet = allow_internet;
        rec.spec.network = policy;
        if self.container_pid(id)?.is_some() {
            net::set_internet(&self.cfg.network, rec.address, allow_internet)
                .at(id, Step::Network)?;
            net::apply_policy(
                &self.cfg.network,
                id,
                rec.address,
                allow_internet,
                &resolved,
            )
            .at(id, Step::Network)?;
        }
        if internet_changed {
            self.write_etc(&p, &rec).at(id, Step::Network)?;
        }
        write_json_durable(&p.record, &rec).at(id, Step::Network)?;
        self.info_of(&p, &rec)
    }
}
