//! Leader election on a `coordination.k8s.io/v1` Lease: acquire it when free or expired, renew
//! it every few seconds, and report when it is lost so the process can stop acting and exit.
//! The decision of what to do with a Lease is the pure [`decide`]; I/O is in [`LeaderElector`].

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::Client;
use std::time::{Duration, Instant};

/// A leader-election failure.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// Reading the Lease failed.
    #[error("reading Lease {namespace}/{name} failed")]
    ReadLease {
        /// Lease namespace.
        namespace: String,
        /// Lease name.
        name: String,
        /// The cause.
        source: kube::Error,
    },
    /// Writing the Lease failed (other than a lost race).
    #[error("writing Lease {namespace}/{name} failed")]
    WriteLease {
        /// Lease namespace.
        namespace: String,
        /// Lease name.
        name: String,
        /// The cause.
        source: kube::Error,
    },
    /// Another replica holds the Lease now, or it could not be renewed in time.
    #[error("lost leadership of Lease {namespace}/{name}: {why}")]
    Lost {
        /// Lease namespace.
        namespace: String,
        /// Lease name.
        name: String,
        /// What happened.
        why: String,
    },
}

/// Timing and identity of leader election.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    /// Lease name.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This replica's identity.
    pub identity: String,
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// How often the leader renews.
    pub renew_every: Duration,
    /// How often a standby replica retries.
    pub retry_every: Duration,
}

impl LeaseSettings {
    /// Defaults: 15 s lease, renewed every 5 s, standbys retry every 2 s.
    pub fn new(name: String, namespace: String, identity: String) -> Self {
        LeaseSettings {
            name,
            namespace,
            identity,
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            retry_every: Duration::from_secs(2),
        }
    }
}

/// What to do with a Lease as found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It is ours: renew it.
    Renew,
    /// It is free or expired: take it over.
    Acquire,
    /// Someone else holds it and it has not expired.
    Standby {
        /// The current holder.
        holder: String,
    },
}

/// Decides what `me` should do with a Lease whose spec is `spec` at time `now`.
pub fn decide(spec: Option<&LeaseSpec>, me: &str, now: Timestamp) -> Verdict {
    let Some(spec) = spec else {
        return Verdict::Acquire;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() {
        return Verdict::Acquire;
    }
    if holder == me {
        return Verdict::Renew;
    }
    let duration_ms = i64::from(spec.lease_duration_seconds.unwrap_or(0).max(0)) * 1000;
    let renewed_ms = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0.as_millisecond());
    match renewed_ms {
        Some(r) if r.saturating_add(duration_ms) > now.as_millisecond() => Verdict::Standby {
            holder: holder.to_string(),
        },
        _ => Verdict::Acquire,
    }
}

/// The spec to write after a [`Verdict::Renew`] or [`Verdict::Acquire`].
pub fn claimed(
    old: Option<&LeaseSpec>,
    verdict: &Verdict,
    settings: &LeaseSettings,
    now: Timestamp,
) -> LeaseSpec {
    let mut spec = old.cloned().unwrap_or_default();
    let duration = i32::try_from(settings.lease_duration.as_secs()).unwrap_or(i32::MAX);
    spec.lease_duration_seconds = Some(duration);
    spec.renew_time = Some(MicroTime(now));
    if *verdict == Verdict::Acquire {
        spec.holder_identity = Some(settings.identity.clone());
        spec.acquire_time = Some(MicroTime(now));
        if old.is_some() {
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        } else {
            spec.lease_transitions = Some(0);
        }
    }
    spec
}

/// The outcome of one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// We hold the Lease.
    Held,
    /// Someone else does.
    HeldBy(String),
    /// Another writer won a race; try again.
    Conflict,
}

/// Acquires, renews and releases the Lease.
#[derive(Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaseSettings,
}

impl LeaderElector {
    /// An elector for the Lease described by `settings`.
    pub fn new(client: Client, settings: LeaseSettings) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &settings.namespace),
            settings,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &LeaseSettings {
        &self.settings
    }

    fn read_err(&self, source: kube::Error) -> LeaderError {
        LeaderError::ReadLease {
            namespace: self.settings.namespace.clone(),
            name: self.settings.name.clone(),
            source,
        }
    }

    fn write_err(&self, source: kube::Error) -> LeaderError {
        LeaderError::WriteLease {
            namespace: self.settings.namespace.clone(),
            name: self.settings.name.clone(),
            source,
        }
    }

    /// One attempt to acquire or renew the Lease.
    pub async fn try_acquire_or_renew(&self) -> Result<Attempt, LeaderError> {
        let now = Timestamp::now();
        let existing = self
            .api
            .get_opt(&self.settings.name)
            .await
            .map_err(|e| self.read_err(e))?;
        let old_spec = existing.as_ref().and_then(|l| l.spec.as_ref());
        let verdict = decide(old_spec, &self.settings.identity, now);
        if let Verdict::Standby { holder } = verdict {
            return Ok(Attempt::HeldBy(holder));
        }
        let spec = claimed(old_spec, &verdict, &self.settings, now);
        let result = match existing {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.settings.name.clone()),
                        namespace: Some(self.settings.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(spec),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Some(mut lease) => {
                // Replace keeps metadata.resourceVersion: a concurrent writer makes this a 409.
                lease.spec = Some(spec);
                self.api
                    .replace(&self.settings.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(_) => Ok(Attempt::Held),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Conflict),
            Err(e) => Err(self.write_err(e)),
        }
    }

    /// Waits until this replica holds the Lease. `standby` is called with the holder's name
    /// each time someone else holds it.
    pub async fn acquire(&self, mut standby: impl FnMut(&str)) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Held) => return,
                Ok(Attempt::HeldBy(holder)) => standby(&holder),
                Ok(Attempt::Conflict) => {}
                Err(e) => {
                    tracing::warn!(error = %crate::events::chain(&e), "leader election attempt failed")
                }
            }
            tokio::time::sleep(self.settings.retry_every).await;
        }
    }

    /// Renews the Lease until it is lost; returns why.
    pub async fn hold(&self) -> LeaderError {
        let mut last_renewal = Instant::now();
        // Give up before the Lease can expire for the others.
        let deadline = self
            .settings
            .lease_duration
            .saturating_sub(self.settings.retry_every);
        loop {
            tokio::time::sleep(self.settings.renew_every).await;
            let why = match self.try_acquire_or_renew().await {
                Ok(Attempt::Held) => {
                    last_renewal = Instant::now();
                    continue;
                }
                Ok(Attempt::HeldBy(holder)) => {
                    return self.lost(format!("the Lease is now held by {holder}"))
                }
                Ok(Attempt::Conflict) => "a concurrent write to the Lease".to_string(),
                Err(e) => crate::events::chain(&e),
            };
            if last_renewal.elapsed() >= deadline {
                return self.lost(format!(
                    "not renewed for {:?}: {why}",
                    last_renewal.elapsed()
                ));
            }
            tracing::warn!(%why, "renewing the leader Lease failed; retrying");
        }
    }

    fn lost(&self, why: String) -> LeaderError {
        LeaderError::Lost {
            namespace: self.settings.namespace.clone(),
            name: self.settings.name.clone(),
            why,
        }
    }

    /// Gives the Lease up (if still ours) so a standby can take over at once.
    pub async fn release(&self) -> Result<(), LeaderError> {
        let Some(mut lease) = self
            .api
            .get_opt(&self.settings.name)
            .await
            .map_err(|e| self.read_err(e))?
        else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        self.api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
            .map(|_| ())
            .map_err(|e| self.write_err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn settings(me: &str) -> LeaseSettings {
        LeaseSettings::new("weir".into(), "ns".into(), me.into())
    }

    fn held_by(holder: &str, renewed: i64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(at(renewed))),
            lease_duration_seconds: Some(duration),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_missing_or_free_lease_is_acquired() {
        assert_eq!(decide(None, "a", at(100)), Verdict::Acquire);
        let free = LeaseSpec::default();
        assert_eq!(decide(Some(&free), "a", at(100)), Verdict::Acquire);
        let released = LeaseSpec {
            holder_identity: Some(String::new()),
            ..held_by("x", 99, 15)
        };
        assert_eq!(decide(Some(&released), "a", at(100)), Verdict::Acquire);
    }

    #[test]
    fn a_live_lease_of_another_holder_means_standby_until_it_expires() {
        let lease = held_by("b", 100, 15);
        assert_eq!(
            decide(Some(&lease), "a", at(114)),
            Verdict::Standby { holder: "b".into() }
        );
        assert_eq!(decide(Some(&lease), "a", at(115)), Verdict::Acquire);
    }

    #[test]
    fn our_own_lease_is_renewed_even_if_late() {
        let lease = held_by("a", 100, 15);
        assert_eq!(decide(Some(&lease), "a", at(500)), Verdict::Renew);
    }

    #[test]
    fn acquiring_counts_a_transition_and_renewing_does_not() {
        let old = held_by("b", 100, 15);
        let s = claimed(Some(&old), &Verdict::Acquire, &settings("a"), at(200));
        assert_eq!(s.holder_identity.as_deref(), Some("a"));
        assert_eq!(s.lease_transitions, Some(1));
        assert_eq!(s.acquire_time, Some(MicroTime(at(200))));
        let r = claimed(Some(&s), &Verdict::Renew, &settings("a"), at(205));
        assert_eq!(r.lease_transitions, Some(1));
        assert_eq!(r.acquire_time, Some(MicroTime(at(200))));
        assert_eq!(r.renew_time, Some(MicroTime(at(205))));
        assert_eq!(r.lease_duration_seconds, Some(15));
        let fresh = claimed(None, &Verdict::Acquire, &settings("a"), at(1));
        assert_eq!(fresh.lease_transitions, Some(0));
    }
}
