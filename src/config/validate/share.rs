//! What the service tells others: the structured reason in a block
//! answer's EDE (`blocklist.structured_errors` and its keys) and the
//! shared sightings (`[share]`).

use super::{Checker, ConfigError};
use crate::config::raw::{RawBlocklist, RawShare};
use crate::config::sections::{ShareConfig, StructuredErrors};

/// The structured EDE's contact and organisation: the schemes the draft
/// registers, and short enough that a block answer stays well inside a
/// 1,232-byte UDP response.
pub(super) fn structured_errors(
    raw: &RawBlocklist,
    cx: &Checker,
) -> Result<Option<StructuredErrors>, ConfigError> {
    let mut total = 0;
    for uri in &raw.error_contact {
        let scheme_ok = ["mailto:", "tel:", "sips:"]
            .iter()
            .any(|s| uri.len() > s.len() && uri[..s.len()].eq_ignore_ascii_case(s));
        if !scheme_ok || uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(cx.invalid(
                "blocklist.error_contact",
                format!("{uri:?} is not a mailto:, tel: or sips: URI (the schemes the structured error draft allows)"),
            ));
        }
        total += uri.len();
    }
    let organisation = raw.error_organisation.as_deref().map(str::trim);
    if total > 200 || organisation.is_some_and(|o| o.is_empty() || o.len() > 100) {
        return Err(cx.invalid(
            if total > 200 { "blocklist.error_contact" } else { "blocklist.error_organisation" },
            "too long for a block answer's EDE text: contacts at most 200 bytes in all, the organisation 1 to 100".into(),
        ));
    }
    if !raw.structured_errors {
        if !raw.error_contact.is_empty() || organisation.is_some() {
            return Err(cx.invalid(
                if raw.error_contact.is_empty() {
                    "blocklist.error_organisation"
                } else {
                    "blocklist.error_contact"
                },
                "is only sent in structured errors: set blocklist.structured_errors = true".into(),
            ));
        }
        return Ok(None);
    }
    Ok(Some(StructuredErrors {
        contact: raw.error_contact.clone(),
        organisation: organisation.map(str::to_owned),
    }))
}

/// `[share]`: the identity's name must say something and fit a STIX name.
pub(in crate::config) fn share(raw: RawShare, cx: &Checker) -> Result<ShareConfig, ConfigError> {
    let name = raw.name.trim();
    if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
        return Err(cx.invalid(
            "share.name",
            "must be 1 to 256 printable characters (it names this service in shared sightings)"
                .into(),
        ));
    }
    Ok(ShareConfig {
        name: name.to_owned(),
        where_sighted: raw.where_sighted,
        tlp: raw.tlp,
        taxii: raw.taxii,
    })
}
