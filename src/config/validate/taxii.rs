//! `[[taxii]]`: the TAXII 2.1 collections to pull.

use std::collections::HashSet;

use super::{Checker, ConfigError};
use crate::config::raw::RawTaxii;
use crate::config::sections::TaxiiConfig;

pub(in crate::config) fn taxii(
    raw: Vec<RawTaxii>,
    cx: &Checker,
) -> Result<Vec<TaxiiConfig>, ConfigError> {
    let mut taxii = Vec::new();
    let mut seen_names = HashSet::new();
    for (i, t) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("taxii[{i}].{k}");
        if t.name.is_empty()
            || !t
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(cx.invalid(
                &key("name"),
                format!("{:?}: use letters, digits, - and _", t.name),
            ));
        }
        if !seen_names.insert(t.name.clone()) {
            return Err(cx.invalid(&key("name"), format!("{:?} is used twice", t.name)));
        }
        super::sources::check_fetch_url(&t.url).map_err(|m| cx.invalid(&key("url"), m))?;
        if t.password_file.is_some() && t.password_env.is_some() {
            return Err(cx.invalid(
                &key("password_file"),
                "give password_file or password_env, not both".into(),
            ));
        }
        if t.token_file.is_some() && t.token_env.is_some() {
            return Err(cx.invalid(
                &key("token_file"),
                "give token_file or token_env, not both".into(),
            ));
        }
        let has_password = t.password_file.is_some() || t.password_env.is_some();
        let has_token = t.token_file.is_some() || t.token_env.is_some();
        if has_password && t.username.is_none() {
            return Err(cx.invalid(&key("username"), "a password needs a username".into()));
        }
        if has_password && has_token {
            return Err(cx.invalid(
                &key("token_file"),
                "use a password or a token, not both".into(),
            ));
        }
        if t.poll_interval_secs < 60 {
            return Err(cx.invalid(
                &key("poll_interval_secs"),
                "at least 60 seconds (be kind to the server)".into(),
            ));
        }
        if t.page_size == 0 {
            return Err(cx.invalid(&key("page_size"), "must be above 0".into()));
        }
        taxii.push(TaxiiConfig {
            password_file: t.password_file.as_ref().map(|p| cx.rel(p)),
            token_file: t.token_file.as_ref().map(|p| cx.rel(p)),
            name: t.name,
            url: t.url,
            collection: t.collection,
            username: t.username,
            password_env: t.password_env,
            token_env: t.token_env,
            poll_interval_secs: t.poll_interval_secs,
            page_size: t.page_size,
        });
    }
    Ok(taxii)
}
