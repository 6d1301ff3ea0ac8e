//! Fuzzing the core's decoders of outside text with proptest: `Policy::from_toml_str`
//! (arbitrary text, text mutations of the shipped policy, and structured mutations: any
//! value of the shipped policy replaced by another TOML value), and the duration and
//! RFC 3339 parsers. Never a panic; an error always says what is wrong (naming the rule
//! and field where there is one); a policy that loads is usable: `decide` and
//! `customer_view` run under it for every channel and purpose at ordinary and extreme
//! instants without panicking.
//!
//! Cases per test: 512 by default, `PROPTEST_CASES` to run more; failures are kept in
//! `proptest-regressions/`.

mod common;

use common::{History, days, hours, proposal, wed_10am};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use tact_core::policy::DEFAULT_POLICY;
use tact_core::*;

fn config() -> ProptestConfig {
    let mut config = ProptestConfig {
        // Integration tests have no lib.rs for proptest's default location to find.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/fuzz.txt",
        ))),
        ..ProptestConfig::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 512;
    }
    config
}

/// A policy that loaded must be usable: decisions and views for every channel and
/// purpose, on a busy history, at ordinary and extreme instants (those the wire allows:
/// `decide` is not meant for instants chrono cannot place in a calendar).
fn exercise(policy: &Policy) {
    let _ = policy.retention();
    for rule in policy.rules() {
        assert!(policy.rule(rule.id()).is_some());
    }
    let now = wed_10am();
    let history = History::new()
        .opted_in(now.saturating_sub(days(400)))
        .page(now.saturating_sub(hours(3)), "pricing")
        .sent(now.saturating_sub(days(1)), Channel::Email, Purpose::Marketing)
        .sent(now.saturating_sub(hours(2)), Channel::Call, Purpose::Sales)
        .engaged(now.saturating_sub(hours(1)), Channel::Email, Engagement::Clicked)
        .at(
            now.saturating_sub(days(2)),
            EventKind::PreferencesChanged {
                time_zone: Some("America/New_York".into()),
                accepted_channels: None,
                max_contacts: Some(ContactLimit {
                    max: 2,
                    window: days(7),
                }),
            },
        )
        .at(
            now.saturating_sub(days(3)),
            EventKind::Purchase {
                order_id: "o1".into(),
            },
        );
    let state = history.state(policy);
    // The instants the wire can carry: protobuf's range, 0001-01-01 to 9999-12-31.
    let (first, last) = (Timestamp(-62_135_596_800_000), Timestamp(253_402_300_799_999));
    for at in [now, Timestamp(0), first, last] {
        for channel in Channel::ALL {
            for purpose in Purpose::ALL {
                let d = decide(&state, policy, &proposal(*channel, *purpose), at);
                for r in &d.reasons {
                    assert!(!r.message().is_empty());
                }
            }
        }
        let _ = customer_view(&state, policy, at, 20);
    }
}

fn check_text(text: &str) {
    match Policy::from_toml_str(text) {
        Ok(policy) => exercise(&policy),
        Err(err) => assert!(!err.to_string().trim().is_empty(), "{err:?}"),
    }
}

/// Every path to a value in a TOML document (table keys and array indexes).
fn paths(v: &toml::Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        toml::Value::Table(t) => {
            for (k, child) in t {
                prefix.push(k.clone());
                out.push(prefix.clone());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        toml::Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                prefix.push(i.to_string());
                out.push(prefix.clone());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn get_mut<'a>(v: &'a mut toml::Value, path: &[String]) -> Option<&'a mut toml::Value> {
    path.iter().try_fold(v, |v, k| match v {
        toml::Value::Table(t) => t.get_mut(k),
        toml::Value::Array(items) => items.get_mut(k.parse::<usize>().ok()?),
        _ => None,
    })
}

fn toml_leaf() -> impl Strategy<Value = toml::Value> {
    prop_oneof![
        // Durations, well formed or not, tiny to absurd.
        "[0-9]{1,20}(ms|s|m|min|h|d|w|y|)".prop_map(toml::Value::String),
        prop::sample::select(vec![
            "0s",
            "-1d",
            "1ms",
            "9223372036854775807ms",
            "106751991167d",
            "15250284452w",
            "",
            "email",
            "sms",
            "call",
            "sales_meeting",
            "marketing",
            "sales",
            "service",
            "transactional",
            "all",
            "Europe/London",
            "Nope/Zone",
            "UTC",
            "21:00",
            "08:00",
            "24:00",
            "00:00",
            "23:59",
            "25:61",
            "-1:00",
            "mon",
            "sun",
            "monday",
            "weekdays",
            "consent",
            "frequency_cap",
            "quiet_hours",
            "fatigue",
            "research_cooldown",
            "earned_meeting",
            "customer_preferences",
            "complaint_cool_off",
            "do_not_contact",
            "service_reply",
        ])
        .prop_map(|s| toml::Value::String(s.to_owned())),
        "\\PC{0,12}".prop_map(toml::Value::String),
        prop_oneof![
            any::<i64>(),
            -3..100i64,
            Just(i64::MAX),
            Just(i64::MIN),
            Just(u32::MAX as i64 + 1)
        ]
        .prop_map(toml::Value::Integer),
        any::<f64>().prop_map(toml::Value::Float),
        any::<bool>().prop_map(toml::Value::Boolean),
    ]
}

fn toml_value() -> impl Strategy<Value = toml::Value> {
    toml_leaf().prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(toml::Value::Array),
            proptest::collection::vec(("[a-z_]{1,12}", inner), 0..4)
                .prop_map(|kv| toml::Value::Table(kv.into_iter().collect())),
        ]
    })
}

fn shipped() -> toml::Value {
    toml::from_str(DEFAULT_POLICY).unwrap()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_policy_arbitrary_text(text in "\\PC{0,512}") {
        check_text(&text);
    }

    #[test]
    fn fuzz_policy_text_mutations(
        edits in proptest::collection::vec((any::<usize>(), any::<char>(), 0..4u8), 1..6),
    ) {
        let mut chars: Vec<char> = DEFAULT_POLICY.chars().collect();
        for (at, c, op) in edits {
            let len = chars.len();
            match op {
                0 if len > 0 => chars[at % len] = c,
                1 => chars.insert(at % (len + 1), c),
                2 if len > 0 => {
                    chars.remove(at % len);
                }
                _ => chars.truncate(at % (len + 1)),
            }
        }
        check_text(&chars.into_iter().collect::<String>());
    }

    #[test]
    fn fuzz_policy_value_mutations(
        edits in proptest::collection::vec((any::<usize>(), toml_value(), 0..3u8), 1..4),
    ) {
        let mut doc = shipped();
        for (pick, with, op) in edits {
            let mut all = Vec::new();
            paths(&doc, &mut Vec::new(), &mut all);
            if all.is_empty() {
                break;
            }
            let path = all[pick % all.len()].clone();
            let (last, parent) = path.split_last().unwrap();
            match op {
                // Remove the key (tables) or element (arrays).
                0 => match get_mut(&mut doc, parent) {
                    Some(toml::Value::Table(t)) => {
                        t.remove(last);
                    }
                    Some(toml::Value::Array(a)) => {
                        let i = last.parse::<usize>().unwrap();
                        a.remove(i);
                    }
                    _ => {}
                },
                // Add an unknown key next to it.
                1 => {
                    if let Some(toml::Value::Table(t)) = get_mut(&mut doc, parent) {
                        t.insert(format!("{last}_x"), with);
                    }
                }
                _ => {
                    if let Some(slot) = get_mut(&mut doc, &path) {
                        *slot = with;
                    }
                }
            }
        }
        if let Ok(text) = toml::to_string(&doc) {
            check_text(&text);
        }
    }

    #[test]
    fn fuzz_durations(text in prop_oneof!["\\PC{0,24}", "[0-9+-]{0,22}[ a-z]{0,4}"]) {
        match text.parse::<Span>() {
            Ok(span) => prop_assert!(span.0 >= 0, "{text:?} -> {span:?}"),
            Err(err) => prop_assert!(err.to_string().contains("not a duration")),
        }
    }

    #[test]
    fn fuzz_instants(
        text in prop_oneof![
            "\\PC{0,40}",
            "[+-]?[0-9]{1,6}-[0-9]{1,2}-[0-9]{1,2}[Tt ][0-9]{1,2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,12})?(Z|z|[+-][0-9]{2}:[0-9]{2})",
        ],
    ) {
        match Timestamp::parse_rfc3339(&text) {
            Ok(t) => {
                let again = Timestamp::parse_rfc3339(&t.to_string());
                prop_assert_eq!(again, Ok(t), "{:?} rendered as {}", text, t);
            }
            Err(err) => prop_assert!(err.to_string().contains("RFC 3339")),
        }
    }
}

#[test]
fn the_shipped_policy_is_usable_under_extreme_instants() {
    exercise(&Policy::default_policy());
}
