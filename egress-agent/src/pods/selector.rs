//! Kubernetes label selectors in their string form (`egress=external`,
//! `tier in (web,api),!canary`), parsed once at start so a typo is refused
//! with one line instead of being sent to the API server, and matched here
//! too: the watcher re-checks every pod it is sent, so a pod that lost its
//! label is never a client, whatever a server sends.
use std::{collections::BTreeMap, fmt};

use anyhow::{bail, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A parsed label selector; its `Display` is the canonical form sent to the
/// API server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    pub fn parse(text: &str) -> Result<LabelSelector> {
        let mut requirements = Vec::new();
        for term in split_terms(text)? {
            requirements.push(parse_term(term.trim())?);
        }
        Ok(LabelSelector { requirements })
    }

    /// Whether `labels` satisfy every requirement (an empty selector matches all).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|req| match req {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            Requirement::NotIn(k, vs) => !labels.get(k).is_some_and(|l| vs.contains(l)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        })
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let terms: Vec<String> = self
            .requirements
            .iter()
            .map(|req| match req {
                Requirement::Equals(k, v) => format!("{k}={v}"),
                Requirement::NotEquals(k, v) => format!("{k}!={v}"),
                Requirement::In(k, vs) => format!("{k} in ({})", vs.join(",")),
                Requirement::NotIn(k, vs) => format!("{k} notin ({})", vs.join(",")),
                Requirement::Exists(k) => k.clone(),
                Requirement::DoesNotExist(k) => format!("!{k}"),
            })
            .collect();
        f.write_str(&terms.join(","))
    }
}

/// Splits at the commas that separate requirements, not those inside `( )`.
fn split_terms(text: &str) -> Result<Vec<&str>> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let (mut terms, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            bail!("unbalanced parentheses");
        }
    }
    if depth != 0 {
        bail!("unbalanced parentheses");
    }
    terms.push(&text[start..]);
    Ok(terms)
}

fn parse_term(term: &str) -> Result<Requirement> {
    if term.is_empty() {
        bail!("empty requirement (a stray comma?)");
    }
    if let Some(key) = term.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(label_key(key.trim())?));
    }
    for (op, negated) in [("!=", true), ("==", false), ("=", false)] {
        if let Some((key, value)) = term.split_once(op) {
            let (key, value) = (label_key(key.trim())?, label_value(value.trim())?);
            return Ok(if negated {
                Requirement::NotEquals(key, value)
            } else {
                Requirement::Equals(key, value)
            });
        }
    }
    let words: Vec<&str> = term.splitn(2, char::is_whitespace).collect();
    if let [key, rest] = words[..] {
        let rest = rest.trim_start();
        for (op, negated) in [("notin", true), ("in", false)] {
            if let Some(list) = rest.strip_prefix(op) {
                let list = list.trim();
                let Some(inner) = list.strip_prefix('(').and_then(|l| l.strip_suffix(')')) else {
                    bail!("{term:?}: `{op}` needs a parenthesised list, like `{key} {op} (a,b)`");
                };
                let values = inner.split(',').map(|v| label_value(v.trim())).collect::<Result<Vec<_>>>()?;
                let key = label_key(key)?;
                return Ok(if negated {
                    Requirement::NotIn(key, values)
                } else {
                    Requirement::In(key, values)
                });
            }
        }
        bail!(
            "{term:?}: expected `key=value`, `key!=value`, `key in (..)`, `key notin (..)`, `key` or `!key`"
        );
    }
    Ok(Requirement::Exists(label_key(term)?))
}

/// `[prefix/]name`: a DNS subdomain prefix and a name of up to 63 characters.
fn label_key(key: &str) -> Result<String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let valid = !prefix.is_empty()
            && prefix.len() <= 253
            && prefix.split('.').all(|part| {
                !part.is_empty()
                    && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            });
        if !valid {
            bail!("{key:?} is not a valid label key: its prefix must be a DNS subdomain");
        }
    }
    if name.is_empty() || !is_label_name(name) {
        bail!("{key:?} is not a valid label key: up to 63 letters, digits, '-', '_' or '.', starting and ending alphanumeric");
    }
    Ok(key.to_string())
}

fn label_value(value: &str) -> Result<String> {
    if !value.is_empty() && !is_label_name(value) {
        bail!("{value:?} is not a valid label value: up to 63 letters, digits, '-', '_' or '.', starting and ending alphanumeric");
    }
    Ok(value.to_string())
}

fn is_label_name(s: &str) -> bool {
    s.len() <= 63
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn equality_and_sets() {
        let sel = LabelSelector::parse("egress=external, tier in (web, api),!canary,env!=dev").unwrap();
        assert!(sel.matches(&labels(&[("egress", "external"), ("tier", "web")])));
        assert!(!sel.matches(&labels(&[("egress", "external"), ("tier", "db")])));
        assert!(!sel.matches(&labels(&[("egress", "external"), ("tier", "api"), ("canary", "")])));
        assert!(!sel.matches(&labels(&[("egress", "external"), ("tier", "api"), ("env", "dev")])));
        assert!(!sel.matches(&labels(&[("tier", "web")])));
        assert_eq!(sel.to_string(), "egress=external,tier in (web,api),!canary,env!=dev");
    }

    #[test]
    fn exists_notin_and_prefixed_keys() {
        let sel = LabelSelector::parse("example.com/egress,app notin (batch)").unwrap();
        assert!(sel.matches(&labels(&[("example.com/egress", "x")])));
        assert!(sel.matches(&labels(&[("example.com/egress", "x"), ("app", "web")])));
        assert!(!sel.matches(&labels(&[("example.com/egress", "x"), ("app", "batch")])));
        assert!(LabelSelector::parse("").unwrap().matches(&labels(&[])));
    }

    #[test]
    fn refuses_malformed_selectors() {
        for bad in
            ["egress=exter nal", "=x", "a,,b", "tier in web", "tier in (a", "-bad=x", "a=b)", "Bad_/x=1"]
        {
            assert!(LabelSelector::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
