//! The `portcullis` command: CLI parsing and wiring only.
//!
//! `serve` runs the resolver; `compile` and `check` run the compiler and
//! the lookup on their own, for operators and deployment pipelines. Errors
//! are printed once, with their cause chain, and the exit code says what
//! kind: 64 (EX_USAGE) for a bad config or arguments, 1 for anything else.

mod cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use cmd::UsageError;
use cmd::review::FilterArgs;
use portcullis::report::OutputFormat;

const EX_USAGE: u8 = 64;

/// jemalloc, because a flood leaves glibc's malloc holding what it freed:
/// after 1.5 million random-subdomain queries the resident set stayed 65%
/// above its start for good, with the live heap back where it began.
/// jemalloc's background thread hands pages nobody uses back to the kernel
/// a second after they are freed, so the process shrinks back when the
/// flood ends (docs/performance.md has the figures).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The allocator's settings, read by jemalloc before the first allocation:
/// purge unused pages after one second (dirty) and at once after that
/// (muzzy, which would otherwise still count as resident), from a
/// background thread so an idle resolver shrinks too. An operator can
/// override them with the `_RJEM_MALLOC_CONF` environment variable.
// SAFETY: jemalloc reads this symbol as a `const char *` to a NUL-terminated
// string; a reference to a static byte array has exactly that layout.
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8; 60] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

#[derive(Parser)]
#[command(version, about = "Protective DNS resolver")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The config file every subcommand takes.
#[derive(clap::Args)]
struct ConfigArg {
    /// The TOML config file.
    #[arg(
        long = "config",
        short = 'c',
        env = "PORTCULLIS_CONFIG",
        default_value = "/etc/portcullis/portcullis.toml"
    )]
    path: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run the resolver.
    Serve {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Compile the blocklist and report what each feed contributed.
    Compile {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Every feed file and remote source (TAXII, download, RPZ) of the running
    /// resolver: version held, last attempt and success, entries, last
    /// failure. Asks its admin API with the operator's token
    /// (PORTCULLIS_TOKEN or --token-file).
    Feeds {
        #[command(flatten)]
        feeds: cmd::feeds::Args,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Write what was blocked as one STIX 2.1 bundle of sightings, for a
    /// sharing community that takes file uploads.
    Share {
        #[command(flatten)]
        share: cmd::share::Args,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// TAXII 2.1 collections.
    Taxii {
        #[command(subcommand)]
        command: TaxiiCommand,
    },
    /// `[[download]]` lists.
    Download {
        #[command(subcommand)]
        command: DownloadCommand,
    },
    /// List blocked queries from the hit log, newest first.
    Logs {
        #[command(flatten)]
        filter: FilterArgs,
        /// Records to show; 0 for all.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Summarise blocked queries: totals, categories and feeds, top names,
    /// top clients, a per-day timeline.
    Report {
        #[command(flatten)]
        filter: FilterArgs,
        /// Rows in each ranking.
        #[arg(long, default_value_t = 20)]
        top: usize,
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
        /// Write to this file instead of standard output.
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Show the decision for a name and why, from the running resolver
    /// (its live list, last-good copies included, and organisations'
    /// policies) through its admin API with the operator's token
    /// (PORTCULLIS_TOKEN or --token-file); --offline compiles the feeds
    /// here instead.
    Check {
        #[command(flatten)]
        check: cmd::check::Live,
        /// Compile the config's feeds here instead of asking the resolver.
        #[arg(long)]
        offline: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the config and every feed it names, without serving: for
    /// deployment pipelines. Exit 0 when all is well, 64 for a bad config,
    /// 1 when a feed, an allow or protected list, or a credential file has
    /// a problem.
    Check {
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Subcommand)]
enum TaxiiCommand {
    /// Pull every configured collection (or one) into feeds_dir now.
    Pull {
        /// Only the `[[taxii]]` entry with this name.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Subcommand)]
enum DownloadCommand {
    /// Fetch every `[[download]]` list (or one) into feeds_dir now, with
    /// the checks the resolver applies.
    Pull {
        /// Only the `[[download]]` entry with this file name.
        #[arg(long)]
        file: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => cmd::serve::run(&config.path),
        Command::Compile { config } => cmd::compile::run(&config.path),
        Command::Feeds { feeds, config } => cmd::feeds::run(&feeds, &config.path),
        Command::Check {
            check,
            offline,
            config,
        } => {
            if offline {
                cmd::check::offline(&check.name, &config.path)
            } else {
                cmd::check::live(&check, &config.path)
            }
        }
        Command::Logs {
            filter,
            limit,
            format,
            config,
        } => cmd::review::logs(&filter, limit, format, &config.path),
        Command::Report {
            filter,
            top,
            format,
            output,
            config,
        } => cmd::review::report(&filter, top, format, output.as_deref(), &config.path),
        Command::Config {
            command: ConfigCommand::Check { config },
        } => cmd::config_check::run(&config.path),
        Command::Share { share, config } => cmd::share::run(&share, &config.path),
        Command::Download {
            command: DownloadCommand::Pull { file, config },
        } => cmd::download::pull(file.as_deref(), &config.path),
        Command::Taxii {
            command: TaxiiCommand::Pull { name, config },
        } => cmd::taxii::pull(name.as_deref(), &config.path),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("portcullis: error: {e:#}");
            if e.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(EX_USAGE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
