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
    if settings.campaign > 0 {
        let json_path = settings.json.clone();
        let result = rt.block_on(async {
            tokio::select! {
                r = run::run_campaign(settings) => r,
                _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
            }
        });
        drop(rt);
        return match result {
            Ok(report) => {
                print!("{}", report.summary());
                if let Some(path) = json_path {
                    let written = serde_json::to_vec_pretty(&report)
                        .map_err(anyhow::Error::from)
                        .and_then(|b| std::fs::write(&path, b).map_err(anyhow::Error::from));
                    if let Err(e) = written {
                        eprintln!("error: writing {}: {e:#}", path.display());
                        return ExitCode::from(1);
                    }
                }
                if report.passed() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    let result = rt.block_on(async {
        tokio::select! {
            r = run::run(settings) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    // Drop the runtime (and with it any broker child still owned by a task) before exiting.
    drop(rt);
    match result {
        Ok(report) => {
            print!("{}", report.summary());
            if let Some(path) = json_path {
                let written = serde_json::to_vec_pretty(&report)
                    .map_err(anyhow::Error::from)
                    .and_then(|b| std::fs::write(&path, b).map_err(anyhow::Error::from));
                if let Err(e) = written {
                    eprintln!("error: writing {}: {e:#}", path.display());
                    return ExitCode::from(1);
                }
            }
            if report.audit.passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
