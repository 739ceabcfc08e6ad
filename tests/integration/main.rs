//! Integration tests: the real `portcullis` binary over real sockets, with
//! real upstream DNS servers (hickory authorities in this process, on
//! loopback).
//!
//! * `harness`: start the binary on a temp config, a small DNS client.
//! * `upstream`: in-process authoritative servers for test zones.
//! * `forward`, `recursive`: the two resolution modes end to end.
//! * `blocking`: block responses, precedence, protected names.
//! * `bad_input`: malformed packets, odd names, broken feeds and configs.
//! * `cli`: `compile` and `check`.
//! * `browser`: the review page in headless Chromium.
//! * `operations`: metrics, health, systemd notify, JSON logs, draining.
//! * `policy`: CNAME-target and answer-IP blocking.
//! * `packet_cache`: whole UDP responses answered again.
//! * `differential`: the same RPZ through Unbound and Portcullis.
//! * `hitlog`: organisations, the hit log, `logs`/`report`, the review API.
//! * `real_data`: the full ../shared/data threat list (skipped without it).

mod harness;
mod upstream;

mod bad_input;
mod blocking;
mod browser;
mod cli;
mod differential;
mod formats;
mod forward;
mod hitlog;
mod operations;
mod packet_cache;
mod policy;
mod real_data;
mod recursive;
mod reload;
mod taxii;
