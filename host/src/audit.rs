//! Typed audit events: one [`AuditEvent`] per policy decision, handed to `tracing` (target
//! `usocket::audit`) and to the embedder's [`AuditHook`], if one is set.
//!
//! Consumers read the struct, never strings parsed back out of a log line: the CLI's
//! `--audit FILE` JSON writer and its dry-run report are two such hooks.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::policy::{Decision, Rule, Use};

/// What a decision did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The use went ahead.
    Allow,
    /// The use was refused (EACCES).
    Deny,
    /// A dry-run policy would have refused the use; it went ahead.
    WouldDeny,
}

impl Verdict {
    /// `"allow"`, `"deny"` or `"would-deny"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::WouldDeny => "would-deny",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a decision was about: an address (with port) or, for `resolve`, a host name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The destination, local address, peer or sender, by use.
    Addr(SocketAddr),
    /// The host name a guest asked to look up.
    Name(String),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Addr(addr) => write!(f, "{addr}"),
            Target::Name(name) => f.write_str(name),
        }
    }
}

/// One policy decision, as the audit trail records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    /// When the decision was made (wall clock).
    pub time: SystemTime,
    /// The guest's label (`UsocketCtx::new`'s first argument).
    pub guest: Arc<str>,
    /// The use decided.
    pub use_: Use,
    /// The address or name it was about.
    pub target: Target,
    /// What happened.
    pub verdict: Verdict,
    /// The policy's decision: the rule that decided, or that none did.
    pub decision: Decision,
    /// How many identical events (same guest, use, target, verdict and decision) before this
    /// one were not passed on by themselves because they came too fast (more than 10 a
    /// second): this event stands for `1 + repeated` decisions. 0 for most events.
    pub repeated: u64,
}

impl AuditEvent {
    /// The rule that decided, if one did.
    pub fn rule(&self) -> Option<&Rule> {
        self.decision.rule()
    }

    /// The decision in words, e.g. `"denied by connect=private:*"`.
    pub fn reason(&self) -> String {
        self.decision.to_string()
    }

    /// Emits the event to `tracing`, target `usocket::audit`, level INFO.
    pub(crate) fn trace(&self) {
        if !tracing::enabled!(target: "usocket::audit", tracing::Level::INFO) {
            return;
        }
        let rule = self
            .rule()
            .map_or_else(|| "none".to_string(), |r| r.to_string());
        tracing::info!(
            target: "usocket::audit",
            guest = &*self.guest,
            r#use = self.use_.keyword(),
            target = %self.target,
            verdict = self.verdict.as_str(),
            rule,
            reason = %self.decision,
            repeated = self.repeated,
        );
    }
}

/// The JSON form: `{"time","guest","use","target","verdict","rule","reason","repeated"}`:
/// `time` in seconds since the Unix epoch (with milliseconds), `rule` the deciding rule's text
/// or `"none"`, `repeated` as [`AuditEvent::repeated`].
impl Serialize for AuditEvent {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("AuditEvent", 8)?;
        let time = self
            .time
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| (d.as_millis() as f64) / 1000.0);
        s.serialize_field("time", &time)?;
        s.serialize_field("guest", &*self.guest)?;
        s.serialize_field("use", self.use_.keyword())?;
        s.serialize_field("target", &self.target.to_string())?;
        s.serialize_field("verdict", self.verdict.as_str())?;
        let rule = self
            .rule()
            .map_or_else(|| "none".to_string(), |r| r.to_string());
        s.serialize_field("rule", &rule)?;
        s.serialize_field("reason", &self.reason())?;
        s.serialize_field("repeated", &self.repeated)?;
        s.end()
    }
}

/// Receives every [`AuditEvent`] of the guests whose context holds it
/// (`UsocketCtx::with_audit`). Called on the guest's task, before the use it decides goes
/// ahead: keep it quick (hand slow work to a channel).
pub trait AuditHook: Send + Sync + 'static {
    /// One decision.
    fn record(&self, event: &AuditEvent);
}

impl<F: Fn(&AuditEvent) + Send + Sync + 'static> AuditHook for F {
    fn record(&self, event: &AuditEvent) {
        self(event)
    }
}
