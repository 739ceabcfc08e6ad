//! The STIX 2.1 objects a sighting is shared as: the sighting, the
//! identities that made and saw it, the indicator it is of (made here for
//! entries from other formats) and the TLP 2.0 marking.
//!
//! Ids are deterministic: the same sighting, indicator or identity gets
//! the same id on every export and every TAXII page, so a consumer that
//! merges by id keeps one object and its latest version. They take the
//! UUIDv4 form (version and variant bits set on 122 bits of a SHA-256 of
//! the key), as STIX asks of everything but cyber-observables: a hash is
//! as unguessable and as unlikely to collide as a random draw.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::clock::{DAY_MS, format_ts};
use crate::config::Tlp;
use crate::hitlog::store::SightingRow;

/// `created` and `modified` of the objects made here rather than observed
/// (identities, indicators for other formats' entries): a constant, so
/// that every export gives them the same version.
const MADE: &str = "1970-01-01T00:00:00.000Z";

/// A UUIDv4-form STIX id for `kind` from the parts of its key.
pub fn stix_id(kind: &str, parts: &[&str]) -> String {
    let mut hash = Sha256::new();
    hash.update(b"portcullis-stix-1\0");
    hash.update(kind.as_bytes());
    for part in parts {
        hash.update([0]);
        hash.update(part.as_bytes());
    }
    let mut b: [u8; 16] = hash.finalize()[..16].try_into().unwrap_or([0; 16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{kind}--{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Whether `text` is a STIX indicator id (`indicator--` and a UUID).
pub fn is_indicator_id(text: &str) -> bool {
    let Some(uuid) = text.strip_prefix("indicator--") else {
        return false;
    };
    uuid.len() == 36
        && uuid.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The TLP 2.0 marking definitions (FIRST TLP 2.0, as the OASIS CTI TC
/// publishes them for STIX 2.1: fixed ids, the `tlp_2_0` extension).
pub fn marking(tlp: Tlp) -> Value {
    let (uuid, name, level) = match tlp {
        Tlp::Clear => ("94868c89-83c2-464b-929b-a1a8aa3c8487", "TLP:CLEAR", "clear"),
        Tlp::Green => ("bab4a63c-aed9-4cf5-a766-dfca5abac2bb", "TLP:GREEN", "green"),
        Tlp::Amber => ("55d920b0-5e8b-4f79-9ee9-91f868d9b421", "TLP:AMBER", "amber"),
        Tlp::AmberStrict => (
            "939a9414-2ddd-4d32-a0cd-375ea402b003",
            "TLP:AMBER+STRICT",
            "amber+strict",
        ),
        Tlp::Red => ("e828b379-4e03-4974-9ac4-e53a884c97c1", "TLP:RED", "red"),
    };
    json!({
        "type": "marking-definition",
        "spec_version": "2.1",
        "id": format!("marking-definition--{uuid}"),
        "created": "2022-10-01T00:00:00.000Z",
        "name": name,
        "extensions": {
            "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d": {
                "extension_type": "property-extension",
                "tlp_2_0": level,
            }
        }
    })
}

pub fn marking_id(tlp: Tlp) -> String {
    marking(tlp)["id"].as_str().unwrap_or_default().to_owned()
}

/// What every object of one export refers to, worked out once.
pub struct Ids {
    /// The service's name.
    pub service: String,
    pub service_id: String,
    pub marking_id: String,
    pub tlp: Tlp,
}

impl Ids {
    pub fn new(service: &str, tlp: Tlp) -> Ids {
        Ids {
            service: service.to_owned(),
            service_id: service_identity_id(service),
            marking_id: marking_id(tlp),
            tlp,
        }
    }
}

/// The service's identity: the creator of every object shared.
pub fn service_identity(ids: &Ids) -> Value {
    json!({
        "type": "identity",
        "spec_version": "2.1",
        "id": ids.service_id,
        "created": MADE,
        "modified": MADE,
        "name": ids.service,
        "description": "A protective DNS resolver service: it blocks queries for names that threat feeds list and reports what it blocked.",
        "identity_class": "system",
        "object_marking_refs": [ids.marking_id],
    })
}

pub fn service_identity_id(name: &str) -> String {
    stix_id("identity", &["service", name])
}

/// A member organisation's identity (its id from [`org_identity_id`]),
/// where sightings name who saw them.
pub fn org_identity(ids: &Ids, id: &str, name: &str) -> Value {
    json!({
        "type": "identity",
        "spec_version": "2.1",
        "id": id,
        "created": MADE,
        "modified": MADE,
        "created_by_ref": ids.service_id,
        "name": name,
        "identity_class": "organization",
        "object_marking_refs": [ids.marking_id],
    })
}

pub fn org_identity_id(service: &str, org: &str) -> String {
    stix_id("identity", &["organisation", service, org])
}

/// The indicator a sighting is of: the feed's own STIX id, or the one
/// made here ([`made_indicator`]).
pub fn indicator_ref(service: &str, row: &SightingRow) -> String {
    if is_indicator_id(&row.indicator) {
        row.indicator.clone()
    } else {
        made_indicator_id(service, row)
    }
}

pub fn made_indicator_id(service: &str, row: &SightingRow) -> String {
    stix_id("indicator", &[service, &row.feed, &row.matched])
}

/// This service's indicator `id` ([`made_indicator_id`]) for a listed
/// entry: a `domain-name` pattern for a name, an address pattern for an
/// address or network (answer-IP entries). For an entry of another
/// format than STIX it is what the sighting is of; for a STIX entry it
/// says which name the feed's indicator was acted on as, and a
/// `derived-from` relationship points to the feed's own (which is its
/// publisher's to share, not ours), so whoever reads the sightings learns
/// every name blocked.
pub fn made_indicator(ids: &Ids, row: &SightingRow, id: &str) -> Value {
    let pattern = match row.matched.parse::<ipnet::IpNet>() {
        Ok(net) => address_pattern(net),
        Err(_) => match row.matched.parse::<std::net::IpAddr>() {
            Ok(ip) => address_pattern(ipnet::IpNet::from(ip)),
            Err(_) => format!("[domain-name:value = '{}']", quoted(&row.matched)),
        },
    };
    let kind = match crate::server::response::sub_error(&row.category) {
        1..=4 => "malicious-activity",
        _ => "unknown",
    };
    json!({
        "type": "indicator",
        "spec_version": "2.1",
        "id": id,
        "created": MADE,
        "modified": MADE,
        "created_by_ref": ids.service_id,
        "name": row.matched,
        "description": format!("Listed in the feed {} that {} blocks.", row.feed, ids.service),
        "indicator_types": [kind],
        "pattern": pattern,
        "pattern_type": "stix",
        "valid_from": MADE,
        "object_marking_refs": [ids.marking_id],
    })
}

/// `made` (this service's indicator) derived from the feed's STIX one.
pub fn derived_from(ids: &Ids, row: &SightingRow, made: &str) -> Value {
    json!({
        "type": "relationship",
        "spec_version": "2.1",
        "id": derived_from_id(made, &row.indicator),
        "created": MADE,
        "modified": MADE,
        "created_by_ref": ids.service_id,
        "relationship_type": "derived-from",
        "source_ref": made,
        "target_ref": row.indicator,
        "object_marking_refs": [ids.marking_id],
    })
}

pub fn derived_from_id(made: &str, original: &str) -> String {
    stix_id("relationship", &[made, original])
}

fn address_pattern(net: ipnet::IpNet) -> String {
    let (kind, full) = match net {
        ipnet::IpNet::V4(_) => ("ipv4-addr", 32),
        ipnet::IpNet::V6(_) => ("ipv6-addr", 128),
    };
    let value = if net.prefix_len() == full {
        net.addr().to_string()
    } else {
        net.to_string()
    };
    format!("[{kind}:value = '{value}']")
}

/// A STIX pattern string literal's escapes: `\` and `'`.
fn quoted(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\'', "\\'")
}

/// The sighting of `row` by `where_ref` (an identity id), of the
/// indicator `of`. Its id is the day, the indicator and who saw it;
/// `created` is the start of the day, so every version has the same.
pub fn sighting(ids: &Ids, row: &SightingRow, where_ref: &str, of: &str) -> Value {
    let day = row.day.to_string();
    json!({
        "type": "sighting",
        "spec_version": "2.1",
        "id": stix_id("sighting", &[&ids.service, where_ref, &day, of]),
        "created": format_ts(row.day * DAY_MS),
        "modified": format_ts(row.last),
        "created_by_ref": ids.service_id,
        "first_seen": format_ts(row.first),
        "last_seen": format_ts(row.last),
        "count": row.n.min(999_999_999),
        "sighting_of_ref": of,
        "where_sighted_refs": [where_ref],
        "object_marking_refs": [ids.marking_id],
    })
}

/// A bundle of `objects`, its id drawn from their ids and the time.
pub fn bundle(objects: Vec<Value>, now: i64) -> Value {
    let mut hash = Sha256::new();
    hash.update(now.to_be_bytes());
    for o in &objects {
        hash.update(o["id"].as_str().unwrap_or_default().as_bytes());
        hash.update(o["modified"].as_str().unwrap_or_default().as_bytes());
    }
    let key: String = hash.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    json!({
        "type": "bundle",
        "id": stix_id("bundle", &[&key]),
        "objects": objects,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(matched: &str, indicator: &str) -> SightingRow {
        SightingRow {
            day: 20_000,
            feed: "threats.txt".into(),
            matched: matched.into(),
            indicator: indicator.into(),
            org: "a".into(),
            category: "malware".into(),
            n: 3,
            first: 20_000 * DAY_MS + 1_000,
            last: 20_000 * DAY_MS + 9_000,
        }
    }

    #[test]
    fn ids_are_stable_v4_shaped_and_differ_by_key() {
        let a = stix_id("sighting", &["x", "1"]);
        assert_eq!(a, stix_id("sighting", &["x", "1"]));
        assert_ne!(a, stix_id("sighting", &["x1", ""]), "parts are separated");
        let uuid = a.strip_prefix("sighting--").unwrap();
        assert_eq!(uuid.len(), 36);
        assert_eq!(&uuid[14..15], "4");
        assert!("89ab".contains(&uuid[19..20]));
        assert!(is_indicator_id(&stix_id("indicator", &["a"])));
        assert!(!is_indicator_id("indicator--a"));
        assert!(!is_indicator_id("rpz.test serial 4"));
    }

    #[test]
    fn an_indicator_is_made_for_other_formats_and_a_stix_one_is_referred_to() {
        let stix = "indicator--0b8b2f2a-1c3d-4e5f-8a9b-0c1d2e3f4a5b";
        assert_eq!(indicator_ref("svc", &row("evil.test", stix)), stix);
        let ids = Ids::new("svc", Tlp::Green);
        let made = |r: &SightingRow| made_indicator(&ids, r, &made_indicator_id("svc", r));
        let evil = row("evil.test", "");
        assert_eq!(made(&evil)["pattern"], "[domain-name:value = 'evil.test']");
        assert_eq!(made(&evil)["indicator_types"][0], "malicious-activity");
        assert_eq!(made(&evil)["id"], indicator_ref("svc", &evil));
        assert_eq!(
            made(&row("192.0.2.0/24", ""))["pattern"],
            "[ipv4-addr:value = '192.0.2.0/24']"
        );
        assert_eq!(
            made(&row("2001:db8::1/128", ""))["pattern"],
            "[ipv6-addr:value = '2001:db8::1']"
        );
        assert_eq!(
            made(&row("it's.test", ""))["pattern"],
            "[domain-name:value = 'it\\'s.test']"
        );
    }

    #[test]
    fn a_sighting_keeps_its_id_and_created_as_its_count_grows() {
        let ids = Ids::new("svc", Tlp::Amber);
        let mut r = row("evil.test", "");
        let first = sighting(&ids, &r, "identity--x", "indicator--y");
        r.n = 10;
        r.last += 5_000;
        let later = sighting(&ids, &r, "identity--x", "indicator--y");
        assert_eq!(first["id"], later["id"]);
        assert_eq!(first["created"], later["created"]);
        assert_ne!(first["modified"], later["modified"]);
        assert_eq!(later["count"], 10);
        assert_eq!(later["first_seen"], format_ts(r.first));
        assert_ne!(
            first["id"],
            sighting(&ids, &r, "identity--y", "indicator--y")["id"],
            "another organisation's sighting"
        );
        assert_eq!(
            later["object_marking_refs"][0],
            "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421"
        );
    }
}
