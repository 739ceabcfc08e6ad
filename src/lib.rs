//! Portcullis: a protective DNS resolver.
//!
//! Networks point their DNS at it; every query is checked against a
//! blocklist compiled from threat-intelligence feeds into an `fst`
//! automaton, and listed names get a block response instead of being
//! resolved. docs/architecture.md describes the system as built; README.md
//! is for operators.
//!
//! # Layout
//!
//! Data flows one way: feeds -> compiler -> blocklist -> lookup -> handler
//! -> hit log.
//!
//! * [`config`]: the TOML file, defaults and validation.
//! * [`dnssec`]: trust anchors and what validation says about an answer.
//! * [`domain`]: the one name normaliser and the reversed-label key.
//! * [`formats`]: one parser per feed format, all producing an `Indicator`.
//! * [`blocklist`]: compile indicators into the fst; the lookup walk; the
//!   `ArcSwap` handle queries read through.
//! * [`policy`]: block actions and how one is chosen.
//! * [`orgs`]: client address -> member organisation.
//! * [`prefix`]: longest-prefix match over IP networks (orgs, answer IPs).
//! * [`resolve`]: forward and recursive upstream resolution.
//! * [`serve`]: the resolver's start-up phases, run and drain.
//! * [`server`]: the hickory request handler and block responses.
//! * [`clock`]: epoch milliseconds, RFC 3339, operator-typed times, UTC days.
//! * [`hitlog`]: hit records, the writer thread, the SQLite store.
//! * [`report`]: organisation reports rendered as text, CSV, JSON, HTML.
//! * [`summary`]: the human-readable output of `compile` and `check`.
//! * [`telemetry`]: metric names and the Prometheus recorder.
//! * [`admin`]: the admin HTTP listener: metrics, health, review API, web page.
//! * [`blockpage`]: the page a sinkholed browser lands on.
//! * [`health`]: what makes the resolver ready to take traffic.
//! * [`http_limits`]: connection caps and idle timeouts of the admin and block-page listeners.
//! * [`lifecycle`]: systemd notifications, signals, draining on shutdown.
//! * [`log_output`]: log lines to standard error, control characters escaped.
//! * [`taxii`]: pulls TAXII 2.1 collections into feeds_dir.
//! * [`share`]: what was blocked, as STIX 2.1 sightings for the community.
//! * [`watch`]: file drops, SIGHUP, rescans -> debounced reload -> swap.

#![deny(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod admin;
pub mod blocklist;
pub mod blockpage;
pub mod clock;
pub mod config;
pub mod dnssec;
pub mod dnstap;
pub mod domain;
pub mod formats;
pub mod health;
pub mod hitlog;
pub mod http_limits;
pub mod lifecycle;
pub mod log_output;
pub mod memory;
pub mod orgs;
pub mod policy;
pub mod prefix;
pub mod reconfig;
pub mod report;
pub mod resolve;
pub mod serve;
pub mod server;
pub mod share;
pub mod sources;
pub mod summary;
pub mod taxii;
pub mod telemetry;
pub mod tls;
pub mod watch;
