//! Tab-separated threat lists: `domain<TAB>category<TAB>family`, as in
//! the maltrail-derived threat-domains.tsv.gz the benches use. Category and
//! family columns are optional; extra columns are ignored. A header line
//! (`domain<TAB>category...` on line 1) is skipped. Entries are subtrees,
//! like every threat feed. A first column that is an address or a CIDR
//! range (as in threat-ips.tsv.gz) is an address indicator for
//! the answer-IP policy.

use super::{Indicator, LineError, LineOutcome, Scope};
use crate::domain;

pub(super) fn parse_line(
    line: &str,
    sink: &mut dyn FnMut(Indicator<'_>),
) -> Result<LineOutcome, LineError> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(LineOutcome::Empty);
    }
    let mut cols = line.split('\t').map(str::trim);
    let name = cols
        .next()
        .filter(|c| !c.is_empty())
        .ok_or(LineError::MissingColumn("domain"))?;
    let category = cols.next().filter(|c| !c.is_empty());
    let detail = cols.next().filter(|c| !c.is_empty());
    let mut indicator = match super::parse_net(name) {
        Some(net) => Indicator::address(net),
        None => {
            let (scope, name) = match name.strip_prefix("*.") {
                Some(rest) => (Scope::Below, rest),
                None => (Scope::Subtree, name),
            };
            Indicator::block(domain::normalize(name)?, scope)
        }
    };
    indicator.category = category;
    indicator.detail = detail;
    sink(indicator);
    Ok(LineOutcome::Loaded(1))
}

#[cfg(test)]
mod tests {
    use super::super::{Format, parse_str};
    use super::*;
    use crate::formats::Verdict;

    #[test]
    fn golden_tsv() {
        let text = "domain\tcategory\tfamily\n# c\nEVIL.example\tmalware\temotet\r\n\
                    bare.example\n\tmalware\tx\nphish.example\tphishing\t\n1.2.3.4\tmalware\tx\n";
        let (got, report) = parse_str(text, Format::Tsv);
        assert_eq!(
            got,
            [
                (
                    "evil.example".into(),
                    Scope::Subtree,
                    Verdict::Block,
                    Some("malware".into()),
                    Some("emotet".into())
                ),
                (
                    "bare.example".into(),
                    Scope::Subtree,
                    Verdict::Block,
                    None,
                    None
                ),
                (
                    "phish.example".into(),
                    Scope::Subtree,
                    Verdict::Block,
                    Some("phishing".into()),
                    None
                ),
                (
                    "1.2.3.4/32".into(),
                    Scope::Exact,
                    Verdict::Block,
                    Some("malware".into()),
                    Some("x".into())
                ),
            ]
        );
        assert_eq!(report.rejected, 1);
        assert_eq!(report.first_rejects[0].line, 5);
        assert_eq!(
            report.first_rejects[0].error,
            LineError::MissingColumn("domain")
        );
    }
}
