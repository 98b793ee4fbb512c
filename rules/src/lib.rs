//! `rules` owns what a dfw policy *says* and how to look it up: the rule and address-set model, the
//! vsipioctl-style text (`ruleset mainrs { rule ... }`, `addrset <id> { ip ..., }`) with precise
//! line:column diagnostics, the policy-file format that groups rule sets and address sets into vNIC
//! filters, and first-match evaluation. It does no I/O and knows nothing of packets' wire format or of
//! the engine: callers hand it text and header fields.
//!
//! ```
//! let policy = rules::parse_policy(r#"
//!     filter web { vnic ip 10.0.0.5;
//!       ruleset mainrs { rule 1 at 1 in protocol tcp from any to any port 80 accept; } }
//! "#).unwrap();
//! assert_eq!(policy.filters[0].rulesets[0].rules[0].id, 1);
//! ```

pub mod classbench;
pub mod classify;
pub mod diag;
pub mod eval;
pub mod lex;
pub mod model;
pub mod policy;
mod print;
pub mod text;

pub use classify::{Classifier, MemberChange};
pub use diag::{Diagnostic, Diagnostics, Severity, Span};
pub use eval::{sets_by_id, CompiledRuleSet, L2Key, L3Key, SetCache, SetIndex, UndefinedSet};
pub use model::*;
pub use policy::{
    check_policy, parse_policy, Checked, FailurePolicy, FilterSpec, Policy, PolicyChange, Vnic, TIMER_NAMES,
};
