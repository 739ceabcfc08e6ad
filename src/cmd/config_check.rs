//! `portcullis config check`: validate the config and every file it
//! names, for deployment pipelines. Exit 0 when all is well, 64 for a bad
//! config, 1 when a feed, an allow or protected list, a credential file
//! or the TLS certificate has a problem.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use portcullis::orgs::OrgMap;

use super::{UsageError, init_tracing, load_config};

pub fn run(path: &Path) -> anyhow::Result<ExitCode> {
    let config = load_config(path)?;
    OrgMap::new(&config.organisations).map_err(|e| UsageError(e.into()))?;
    init_tracing(&config);
    let (_, report) = portcullis::blocklist::compile(&config).context("compiling the blocklist")?;
    let mut problems: Vec<String> = report
        .feeds
        .iter()
        .filter_map(|f| f.error.as_ref().map(|e| format!("feed {}: {e}", f.name)))
        .collect();
    for t in &config.taxii {
        for file in [&t.password_file, &t.token_file].into_iter().flatten() {
            if let Err(e) = std::fs::metadata(file) {
                problems.push(format!(
                    "taxii {}: credential file {}: {e}",
                    t.name,
                    file.display()
                ));
            }
        }
    }
    for zone in &config.rpz {
        if let Some(tsig) = &zone.tsig
            && let Err(e) = portcullis::sources::rpz::signer(tsig)
        {
            problems.push(format!("rpz {}: {e}", zone.zone));
        }
    }
    for d in &config.downloads {
        if let Err(e) = portcullis::sources::download::client(d) {
            problems.push(format!("download {}: {e}", d.file));
        }
    }
    if let Some(pg) = &config.hitlog.postgres {
        for (what, file) in [
            ("password file", &pg.password_file),
            ("CA file", &pg.ca_file),
        ] {
            if let Some(file) = file
                && let Err(e) = std::fs::File::open(file)
            {
                problems.push(format!("hitlog.postgres: {what} {}: {e}", file.display()));
            }
        }
    }
    let mut warnings = config.warnings.clone();
    if let Some(encrypted) = &config.server.encrypted {
        match portcullis::tls::CertStore::open(&encrypted.cert, &encrypted.key) {
            Ok(certs) => {
                let days = certs.seconds_left() / 86_400;
                if certs.seconds_left() <= 0 {
                    problems.push(format!(
                        "TLS certificate {} has expired",
                        encrypted.cert.display()
                    ));
                } else if days < 7 {
                    warnings.push(format!(
                        "TLS certificate {} expires in {days} days",
                        encrypted.cert.display()
                    ));
                }
            }
            Err(e) => problems.push(format!("TLS certificate: {e}")),
        }
    }
    println!(
        "{}: {} feeds, {} names, {} organisations, {} TAXII sources, {} downloads, {} RPZ zones",
        path.display(),
        report.feeds.len(),
        report.entries,
        config.organisations.len(),
        config.taxii.len(),
        config.downloads.len(),
        config.rpz.len()
    );
    for warning in &warnings {
        println!("warning: {warning}");
    }
    if problems.is_empty() {
        println!("config OK");
        return Ok(ExitCode::SUCCESS);
    }
    for p in &problems {
        println!("problem: {p}");
    }
    Ok(ExitCode::FAILURE)
}
