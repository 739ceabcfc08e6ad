//! Roaming devices: an organisation's laptops and phones outside its
//! networks are recognised by a key they present, not by their address.
//!
//! * DoH: the key is the last segment of the path, `/dns-query/{key}`.
//! * DoT and DoQ: the key is the first label of the TLS server name,
//!   `{key}.dot.{tls_name}` (what Android's Private DNS setting takes; the
//!   certificate needs `*.dot.{tls_name}`).
//!
//! The config holds each key's SHA-256, like the API tokens. A key wins
//! over the address; a key no organisation holds is refused, never
//! judged by another organisation's policy. Without a key, the address
//! decides as on clear DNS.

use super::PolicyHandle;
use super::decide::Attribution;

/// Keys to organisations, and the server-name suffix that carries one.
#[derive(Debug)]
pub struct Roaming {
    /// The keys as the serving policy has them now (a config reload may
    /// add or revoke one).
    policy: PolicyHandle,
    /// `.dot.{tls_name}`, lower case, no trailing dot; `None` without a
    /// configured name (server names then carry no key).
    suffix: Option<String>,
}

impl Roaming {
    pub fn new(policy: PolicyHandle, tls_name: Option<&str>) -> Roaming {
        let suffix = tls_name
            .map(|name| format!(".dot.{}", name.trim_end_matches('.').to_ascii_lowercase()));
        Roaming { policy, suffix }
    }

    /// Attribution by the TLS server name (SNI) a DoT or DoQ client sent.
    pub fn by_server_name(&self, server_name: Option<&str>) -> Attribution {
        let (Some(name), Some(suffix)) = (server_name, &self.suffix) else {
            return Attribution::Address;
        };
        let name = name.trim_end_matches('.');
        let Some(key) = strip_suffix_ignore_case(name, suffix) else {
            return Attribution::Address;
        };
        if key.is_empty() || key.contains('.') {
            return Attribution::UnknownKey;
        }
        self.by_key(key)
    }

    /// Attribution by a key as presented (a DoH path segment).
    pub fn by_key(&self, key: &str) -> Attribution {
        match self.policy.load().orgs.by_roaming_key(key) {
            Some(org) => Attribution::Key(org),
            None => Attribution::UnknownKey,
        }
    }
}

fn strip_suffix_ignore_case<'a>(name: &'a str, suffix: &str) -> Option<&'a str> {
    let at = name.len().checked_sub(suffix.len())?;
    let tail = name.get(at..)?;
    tail.eq_ignore_ascii_case(suffix).then(|| &name[..at])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Organisation;
    use crate::orgs::{OrgId, OrgMap};

    fn orgs() -> PolicyHandle {
        let org = |id: &str, key: Option<&str>| Organisation {
            id: id.into(),
            name: id.into(),
            networks: Vec::new(),
            token_sha256: None,
            roaming_key_sha256: key.map(str::to_owned),
            allow: Vec::new(),
            actions: Default::default(),
            contact: None,
            client_qps: None,
        };
        use sha2::{Digest, Sha256};
        let hash: String = Sha256::digest(b"alphakey")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        crate::server::ClientPolicy::for_orgs(
            OrgMap::new(&[org("a", None), org("b", Some(&hash))]).unwrap(),
        )
    }

    #[test]
    fn a_key_in_the_server_name_names_its_organisation() {
        let roaming = Roaming::new(orgs(), Some("DNS.example.gov."));
        assert_eq!(
            roaming.by_server_name(Some("alphakey.dot.dns.example.gov")),
            Attribution::Key(OrgId(1))
        );
        assert_eq!(
            roaming.by_server_name(Some("ALPHAKEY.DOT.DNS.EXAMPLE.GOV.")),
            Attribution::UnknownKey,
            "the key itself is case-sensitive, like any secret"
        );
        assert_eq!(
            roaming.by_server_name(Some("wrong.dot.dns.example.gov")),
            Attribution::UnknownKey
        );
        assert_eq!(
            roaming.by_server_name(Some("a.b.dot.dns.example.gov")),
            Attribution::UnknownKey
        );
        // Not a roaming name: the address decides.
        assert_eq!(
            roaming.by_server_name(Some("dns.example.gov")),
            Attribution::Address
        );
        assert_eq!(roaming.by_server_name(None), Attribution::Address);
    }

    #[test]
    fn without_a_tls_name_server_names_carry_no_key() {
        let roaming = Roaming::new(orgs(), None);
        assert_eq!(
            roaming.by_server_name(Some("alphakey.dot.dns.example.gov")),
            Attribution::Address
        );
        assert_eq!(roaming.by_key("alphakey"), Attribution::Key(OrgId(1)));
        assert_eq!(roaming.by_key("nope"), Attribution::UnknownKey);
    }
}
