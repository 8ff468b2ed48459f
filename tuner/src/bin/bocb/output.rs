//! How the commands print: JSON or a rendered table, to a file or standard
//! output.

use std::path::Path;

use anyhow::{Context, Result};

/// Prints `report` as pretty JSON with `--json`, else as `render` lays it out.
#[cfg(feature = "train")]
pub fn print_json_or<T: serde::Serialize + ?Sized>(
    report: &T,
    json: bool,
    render: impl Fn(&T) -> String,
) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", render(report));
    }
    Ok(())
}

/// Writes `text` to `out`, or to standard output.
pub fn write_output(out: Option<&Path>, text: &str) -> Result<()> {
    match out {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}

/// Opens the store at `dir`, naming it in the error.
pub fn open_store(dir: &Path) -> Result<bocb_store::Store> {
    bocb_store::Store::open(dir).with_context(|| format!("opening the store at {}", dir.display()))
}
