//! Tables, JSON, man pages and completions.

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;
use serde::Serialize;

use super::args::{Cli, Shell};
use super::CliError;

fn write_failed(e: std::io::Error) -> CliError {
    CliError::Failed(format!("cannot write the output: {e}"))
}

/// Prints a value as pretty JSON on stdout.
pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::Failed(format!("cannot encode the output: {e}")))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").map_err(write_failed)
}

/// Prints a plain table with a header row; columns as wide as their widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> Result<(), CliError> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = std::io::stdout().lock();
    let line = |cells: Vec<&str>| -> String {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    writeln!(out, "{}", line(headers.to_vec())).map_err(write_failed)?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))
            .map_err(write_failed)?;
    }
    Ok(())
}

/// Prints one line on stdout.
pub fn say(text: &str) -> Result<(), CliError> {
    writeln!(std::io::stdout().lock(), "{text}").map_err(write_failed)
}

pub fn completions(shell: Shell) -> Result<(), CliError> {
    use clap_complete::Shell as S;
    let shell = match shell {
        Shell::Bash => S::Bash,
        Shell::Zsh => S::Zsh,
        Shell::Fish => S::Fish,
        Shell::Elvish => S::Elvish,
        Shell::Powershell => S::PowerShell,
    };
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "nasring",
        &mut std::io::stdout(),
    );
    Ok(())
}

/// Writes `nasring.1` to stdout, or it and one page per command into a folder.
pub fn man_pages(dir: Option<&Path>) -> Result<(), CliError> {
    let cmd = Cli::command();
    let Some(dir) = dir else {
        return clap_mangen::Man::new(cmd)
            .render(&mut std::io::stdout())
            .map_err(write_failed);
    };
    std::fs::create_dir_all(dir).map_err(write_failed)?;
    clap_mangen::generate_to(cmd, dir).map_err(write_failed)
}
