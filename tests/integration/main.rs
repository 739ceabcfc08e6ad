//! Integration tests: the real `portcullis` binary over real sockets, with
//! real upstream DNS servers (hickory authorities in this process, on
//! loopback). Every test module is listed here with what it covers.
//!
//! Helpers:
//! * `harness`: start the binary on a temp config, a small DNS client.
//! * `upstream`: in-process authoritative servers for test zones.
//!
//! Tests:
//! * `bad_input`: malformed packets, odd names, broken feeds and configs.
//! * `blocking`: block responses, precedence, protected names.
//! * `browser`: the review page and the block page in headless Chromium.
//! * `check`: `portcullis check` against the running resolver.
//! * `cli`: `compile`, `check --offline` and `config check`.
//! * `differential`: the same RPZ through Unbound and Portcullis.
//! * `dnssec`: validation over a signed lab (dnssec-signzone, NSD).
//! * `dnstap`: dnstap to fstrm_capture, read back with dnstap-read.
//! * `encrypted`: DoT, DoH and DoQ with kdig, dig, curl and aioquic;
//!   roaming keys, discovery, certificate reload, connection caps.
//! * `docs`: the shipped config and every README example load.
//! * `formats`: every feed format end to end through the binary.
//! * `fleet`: nodes forwarding hit records to a real PostgreSQL.
//! * `forward`: forward mode against a local authority.
//! * `hitlog`: organisations, the hit log, `logs`/`report`, the review API.
//! * `in_process`: `portcullis::serve` on the caller's sockets and shutdown.
//! * `operations`: metrics, health, systemd notify, JSON logs, draining.
//! * `packet_cache`: whole UDP responses answered again.
//! * `packet_fuzz`: malformed messages by the thousand, UDP and TCP.
//! * `policy`: CNAME-target and answer-IP blocking.
//! * `real_data`: the full shared threat list (skipped without it).
//! * `recursive`: recursive mode from a loopback root.
//! * `reload`: file drops, SIGHUP, last good, the snapshot.
//! * `resilience`: serve-stale and quick failure when the upstream dies.
//! * `share`: sightings as STIX 2.1 over TAXII, `portcullis share`, and
//!   structured block reasons, read by the OASIS tools and medallion.
//! * `taxii`: pulling a collection from a real TAXII 2.1 server.

mod harness;
mod upstream;

mod bad_input;
mod blocking;
mod browser;
mod check;
mod cli;
mod config_reload;
mod differential;
mod dnssec;
mod dnstap;
mod docs;
mod download;
pub mod encrypted;
mod fleet;
mod fleet_view;
mod formats;
mod forward;
mod hitlog;
mod in_process;
mod name_servers;
mod operations;
mod packet_cache;
mod packet_fuzz;
mod policy;
mod real_data;
mod recursive;
mod reload;
mod resilience;
mod rpz_xfr;
mod share;
mod taxii;
