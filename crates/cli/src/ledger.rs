//! `bantam ledger`: what a server's ledger (`serve --ledger FILE`) holds: totals per day,
//! key, route, model or way of serving, the escalation rate, the money saved against
//! sending everything upstream, and the rows as CSV.

use anyhow::{bail, Result};
use clap::Args;
use server::ledger::{self, Totals, GROUPS};
use std::path::PathBuf;

#[derive(Args)]
pub struct LedgerArgs {
    /// The ledger file `bantam serve --ledger` writes
    #[arg(long, env = "BANTAM_LEDGER")]
    ledger: PathBuf,
    /// Group by all, day, key, route, model or served
    #[arg(long, default_value = "route")]
    by: String,
    /// Only requests from this UTC day on (YYYY-MM-DD)
    #[arg(long)]
    since: Option<String>,
    /// Print the totals as JSON
    #[arg(long)]
    json: bool,
    /// Write every row as CSV to this file ("-": standard output) instead of totals
    #[arg(long)]
    csv: Option<PathBuf>,
}

pub fn main(a: LedgerArgs) -> Result<()> {
    if !GROUPS.contains(&a.by.as_str()) {
        bail!("--by takes one of {}, not {:?}", GROUPS.join(", "), a.by);
    }
    if let Some(s) = &a.since {
        let ok = s.len() == 10 && s.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() });
        if !ok {
            bail!("--since takes a day as YYYY-MM-DD, not {s:?}");
        }
    }
    if !a.ledger.exists() {
        bail!("no ledger at {}: `bantam serve --ledger FILE` writes one", a.ledger.display());
    }
    if let Some(path) = &a.csv {
        let n = if path.as_os_str() == "-" {
            ledger::export_csv(&a.ledger, a.since.as_deref(), &mut std::io::stdout().lock())?
        } else {
            let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
            ledger::export_csv(&a.ledger, a.since.as_deref(), &mut f)?
        };
        if path.as_os_str() != "-" {
            eprintln!("{n} rows written to {}", path.display());
        }
        return Ok(());
    }
    let groups = ledger::summary(&a.ledger, &a.by, a.since.as_deref())?;
    let all = ledger::summary(&a.ledger, "all", a.since.as_deref())?.pop().unwrap_or_default();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "by": a.by, "groups": groups, "total": all }))?);
        return Ok(());
    }
    print_table(&a.by, &groups, &all);
    Ok(())
}

fn print_table(by: &str, groups: &[Totals], all: &Totals) {
    println!(
        "{:<24} {:>8} {:>6} {:>6} {:>6} {:>9} {:>9} {:>10} {:>10} {:>12} {:>10}",
        by, "requests", "ok", "cancel", "error", "escalated", "fallback", "tokens in", "tokens out", "cost $", "saved $"
    );
    let row = |t: &Totals, name: &str| {
        println!(
            "{:<24} {:>8} {:>6} {:>6} {:>6} {:>8.1}% {:>9} {:>10} {:>10} {:>12.6} {:>10.6}",
            name,
            t.requests,
            t.ok,
            t.cancelled,
            t.errors,
            100.0 * t.escalation_rate,
            t.fallback,
            t.prompt_tokens,
            t.completion_tokens,
            t.cost,
            t.saved
        )
    };
    for t in groups {
        row(t, &t.group);
    }
    if by != "all" {
        row(all, "total");
    }
    if all.upstream_cost > 0.0 {
        println!("sending every routed request upstream would have cost ${:.6}; saved ${:.6}", all.upstream_cost, all.saved);
    }
}
