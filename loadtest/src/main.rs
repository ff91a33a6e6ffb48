//! `switchboard-loadtest`: load generator, chaos driver and auditor for the Switchboard broker.
//!
//! This file only wires things up: parse and validate the command line (exit 2 on bad
//! arguments), run (`run::run`), print the summary, write `--json`, and map the audit result to
//! the exit code (0 pass, 1 fail or run error). Ctrl-C aborts the run; a broker we started is
//! killed on the way out. See `--help` and loadtest/README.md.

mod agents;
mod api;
mod audit;
mod baseline;
mod bot;
mod broker_config;
mod broker_process;
mod broker_view;
mod campaign;
mod cli;
mod fake_graph;
mod fanout;
mod http1;
mod load;
mod mixed;
mod outcome;
mod report;
mod run;
mod sse;
mod stats;
mod status_callbacks;
mod webhook;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    if cli.serve_baseline {
        return baseline::serve_forever();
    }
    let print_config = cli.print_config;
    let settings = match cli.validate() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if print_config {
        return match run::print_config(&settings) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    let json_path = settings.json.clone();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async {
        let run = async {
            if settings.campaign > 0 && !settings.mixed {
                run::run_campaign(settings).await.map(Finished::Campaign)
            } else {
                run::run(settings).await.map(|r| Finished::Run(Box::new(r)))
            }
        };
        tokio::select! {
            r = run => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    // Drop the runtime (and with it any broker child still owned by a task) before exiting.
    drop(rt);
    let finished = match result {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(1);
        }
    };
    print!("{}", finished.summary());
    if let Some(path) = json_path {
        let written = finished
            .to_json()
            .and_then(|b| std::fs::write(&path, b).map_err(anyhow::Error::from));
        if let Err(e) = written {
            eprintln!("error: writing {}: {e:#}", path.display());
            return ExitCode::from(1);
        }
    }
    if finished.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// What a run printed and judged: an inbound run (passes with its audit; a `--mixed` one also
/// with its campaign) or a campaign.
enum Finished {
    Run(Box<report::Report>),
    Campaign(campaign::CampaignReport),
}

impl Finished {
    fn summary(&self) -> String {
        match self {
            Self::Run(r) => r.summary(),
            Self::Campaign(r) => r.summary(),
        }
    }

    fn passed(&self) -> bool {
        match self {
            Self::Run(r) => r.passed(),
            Self::Campaign(r) => r.passed(),
        }
    }

    fn to_json(&self) -> anyhow::Result<Vec<u8>> {
        Ok(match self {
            Self::Run(r) => serde_json::to_vec_pretty(r)?,
            Self::Campaign(r) => serde_json::to_vec_pretty(r)?,
        })
    }
}
