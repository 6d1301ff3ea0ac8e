//! A policy in plain words, and the differences between two policies (`tact policy
//! check`, `--against`). Pure: what is printed is derived from the loaded policy, not
//! the file's text, so it says what tact will actually do (including the built-in
//! `stale_state` rule a policy without one gets).

use std::collections::BTreeSet;

use crate::event::{Channel, Purpose};
use crate::policy::{Policy, Rule, RuleKind};
use crate::rules::{do_not_contact, stale_state};

fn names<T: Copy>(all: &[T], bits: u8, bit: impl Fn(T) -> u8, name: impl Fn(T) -> &'static str) -> String {
    let chosen: Vec<&str> = all
        .iter()
        .filter(|x| bits & bit(**x) != 0)
        .map(|x| name(*x))
        .collect();
    if chosen.len() == all.len() {
        "all".to_owned()
    } else {
        chosen.join(", ")
    }
}

pub(crate) fn channels(bits: u8) -> String {
    names(Channel::ALL, bits, Channel::bit, Channel::as_str)
}

pub(crate) fn purposes(bits: u8) -> String {
    names(Purpose::ALL, bits, Purpose::bit, Purpose::as_str)
}

/// What the rule does, in one sentence (without its id).
pub fn rule_in_words(rule: &Rule) -> String {
    let on = format!(
        "{} on {} channels",
        purposes(rule.purposes()),
        channels(rule.channels())
    );
    let mut s = match rule.kind() {
        RuleKind::Consent(c) => c.in_words(&on),
        RuleKind::ServiceReply(s) => s.in_words(&on),
        RuleKind::Transactional(t) => t.in_words(&on),
        RuleKind::DoNotContact => do_not_contact::in_words(&on),
        RuleKind::ComplaintCoolOff(c) => c.in_words(&on),
        RuleKind::ResearchCooldown(c) => c.in_words(&on),
        RuleKind::EarnedMeeting(m) => m.in_words(&on),
        RuleKind::FrequencyCap(c) => c.in_words(&on),
        RuleKind::QuietHours(q) => q.in_words(&on),
        RuleKind::Fatigue(f) => f.in_words(&on),
        RuleKind::AnswerFirst(a) => a.in_words(&on),
        RuleKind::StaleState => stale_state::in_words(&on),
        RuleKind::CustomerPreferences(p) => p.in_words(&on),
    };
    if let Some(c) = rule.suggest() {
        s.push_str(&format!("; suggests {c}"));
    }
    s
}

/// The policy in plain words: a header line, then one line per rule (`id (type): ...`).
pub fn policy_in_words(policy: &Policy) -> Vec<String> {
    let mut out = vec![format!(
        "policy {}: default time zone {}, {} rules, keeps {} of history",
        policy.version(),
        policy.default_time_zone(),
        policy.rules().len(),
        policy.retention().window
    )];
    for r in policy.rules() {
        out.push(format!(
            "{} ({}): {}",
            r.id(),
            kind_name(r.kind()),
            rule_in_words(r)
        ));
    }
    out
}

/// The rule type's name, as written in the policy file.
pub fn kind_name(kind: &RuleKind) -> &'static str {
    match kind {
        RuleKind::Consent(_) => "consent",
        RuleKind::ServiceReply(_) => "service_reply",
        RuleKind::Transactional(_) => "transactional",
        RuleKind::DoNotContact => "do_not_contact",
        RuleKind::ComplaintCoolOff(_) => "complaint_cool_off",
        RuleKind::ResearchCooldown(_) => "research_cooldown",
        RuleKind::EarnedMeeting(_) => "earned_meeting",
        RuleKind::FrequencyCap(_) => "frequency_cap",
        RuleKind::QuietHours(_) => "quiet_hours",
        RuleKind::Fatigue(_) => "fatigue",
        RuleKind::AnswerFirst(_) => "answer_first",
        RuleKind::StaleState => "stale_state",
        RuleKind::CustomerPreferences(_) => "customer_preferences",
    }
}

/// What changes from `old` to `new`, one line each (`+ rule`, `- rule`, `~ rule`,
/// version, time zone, history kept); empty when they decide alike. Rules are matched
/// by id; their order does not matter (it never changes a decision).
pub fn policy_diff(old: &Policy, new: &Policy) -> Vec<String> {
    let mut out = Vec::new();
    if old.version() != new.version() {
        out.push(format!("version: {} -> {}", old.version(), new.version()));
    }
    if old.default_time_zone() != new.default_time_zone() {
        out.push(format!(
            "default_time_zone: {} -> {}",
            old.default_time_zone(),
            new.default_time_zone()
        ));
    }
    if old.retention() != new.retention() {
        out.push(format!(
            "history kept: {} -> {}",
            old.retention().window,
            new.retention().window
        ));
    }
    let ids: BTreeSet<&str> = old.rules().iter().chain(new.rules()).map(|r| &**r.id()).collect();
    for id in ids {
        match (old.rule(id), new.rule(id)) {
            (None, Some(r)) => out.push(format!("+ {id} ({}): {}", kind_name(r.kind()), rule_in_words(r))),
            (Some(r), None) => out.push(format!("- {id} ({}): {}", kind_name(r.kind()), rule_in_words(r))),
            (Some(a), Some(b)) => {
                let (wa, wb) = (rule_in_words(a), rule_in_words(b));
                let (ka, kb) = (kind_name(a.kind()), kind_name(b.kind()));
                if wa != wb || ka != kb {
                    out.push(format!("~ {id}: was ({ka}): {wa}"));
                    out.push(format!("  {:width$}  now ({kb}): {wb}", "", width = id.len()));
                }
            }
            (None, None) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_reads_in_words() {
        let p = Policy::default_policy();
        let lines = policy_in_words(&p);
        assert_eq!(lines.len(), p.rules().len() + 1);
        let cap = lines.iter().find(|l| l.starts_with("cap-email ")).unwrap();
        assert!(cap.contains("at most 3 outreach in any 7 days"), "{cap}");
        assert!(cap.contains("marketing, sales on email channels"), "{cap}");
    }

    #[test]
    fn a_diff_names_changed_added_and_removed_rules() {
        let old = Policy::default_policy();
        assert!(policy_diff(&old, &old).is_empty());
        let text = crate::policy::DEFAULT_POLICY
            .replace("version = \"default-2026.12\"", "version = \"next\"")
            .replace(
                "id = \"cap-email\"\ntype = \"frequency_cap\"\nchannels = [\"email\"]\npurposes = [\"marketing\", \"sales\"]\nmax = 3",
                "id = \"cap-email\"\ntype = \"frequency_cap\"\nchannels = [\"email\"]\npurposes = [\"marketing\", \"sales\"]\nmax = 2",
            );
        let new = Policy::from_toml_str(&text).unwrap();
        let diff = policy_diff(&old, &new);
        assert!(
            diff.iter().any(|l| l == "version: default-2026.12 -> next"),
            "{diff:?}"
        );
        let changed = diff
            .iter()
            .position(|l| l.starts_with("~ cap-email"))
            .expect("cap-email changed");
        assert!(diff[changed + 1].contains("at most 2 outreach"), "{diff:?}");
    }
}
