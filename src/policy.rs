//! What to do with a listed name: the block actions and how one is chosen.
//!
//! Pure data and functions, no I/O: the compiler resolves a feed's entries
//! to an action once (feed setting, else the category's, else the default),
//! and the handler turns the action into a response.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

/// A block response (docs/architecture.md "Block responses").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Name error with the policy SOA: the name does not exist.
    #[default]
    Nxdomain,
    /// No error, no data, with the policy SOA.
    Nodata,
    /// REFUSED, no SOA.
    Refused,
    /// A/AAAA of the configured block-page addresses; NODATA for other types.
    Sinkhole,
    /// No answer at all; the client times out.
    Drop,
    /// Monitor mode: answer normally, record the hit.
    Log,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Nxdomain => "nxdomain",
            Action::Nodata => "nodata",
            Action::Refused => "refused",
            Action::Sinkhole => "sinkhole",
            Action::Drop => "drop",
            Action::Log => "log",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The action for an entry: the feed's setting wins, then the category's,
/// then the configured default.
pub fn choose_action(
    feed_action: Option<Action>,
    category: &str,
    by_category: &BTreeMap<String, Action>,
    default: Action,
) -> Action {
    feed_action
        .or_else(|| by_category.get(category).copied())
        .unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_beats_category_beats_default() {
        let mut by_category = BTreeMap::new();
        by_category.insert("phishing".to_owned(), Action::Nodata);
        assert_eq!(
            choose_action(
                Some(Action::Refused),
                "phishing",
                &by_category,
                Action::Nxdomain
            ),
            Action::Refused
        );
        assert_eq!(
            choose_action(None, "phishing", &by_category, Action::Nxdomain),
            Action::Nodata
        );
        assert_eq!(
            choose_action(None, "malware", &by_category, Action::Nxdomain),
            Action::Nxdomain
        );
    }
}
