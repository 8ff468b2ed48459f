//! Reading a published results table (`bocb import`) and its optional file
//! of best lr / weight-decay grid indices.
//!
//! The table is tab-separated: a header `Optimizer<TAB>backbone...`, then one
//! row per optimizer with one accuracy (percent) per backbone. Rows named
//! `Mean` or `Std/Range` (the paper's summary rows) are skipped, as are
//! blank lines and lines starting with `#`. An empty cell or `-` is a pair
//! without a result.
//!
//! The grid file has the same layout and names; each cell is
//! `LR_INDEX/WEIGHT_DECAY_INDEX`, 0-based positions on the optimizer's
//! 5-point grids (2 is the centre), or empty / `-` when unknown.

use std::collections::BTreeMap;
use std::path::Path;

use bocb_store::{GridPos, ImportedResult, ImportedTable, GRID_POINTS};
use thiserror::Error;

/// A problem in a table or grid file, located by line.
#[derive(Debug, Error)]
pub enum TableError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Invalid {
        path: String,
        line: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Empty { path: String, message: String },
}

/// Summary rows of the paper's layout, not optimizers.
const SUMMARY_ROWS: [&str; 2] = ["Mean", "Std/Range"];

/// The cells of a table file: backbones, then (optimizer, line, cells).
struct Cells {
    backbones: Vec<String>,
    rows: Vec<(String, usize, Vec<String>)>,
}

fn read_cells(text: &str, path: &str) -> Result<Cells, TableError> {
    let invalid = |line: usize, message: String| TableError::Invalid {
        path: path.to_string(),
        line,
        message,
    };
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'));
    let Some((header_line, header)) = lines.next() else {
        return Err(TableError::Empty {
            path: path.to_string(),
            message: "the file has no header row; the first row must be `Optimizer` then the \
                      backbone names, separated by tabs"
                .into(),
        });
    };
    let mut header_cells = header.split('\t').map(str::trim);
    if header_cells.next() != Some("Optimizer") {
        let hint = if header.contains('\t') {
            ""
        } else {
            " (no tab found: cells must be separated by tabs)"
        };
        return Err(invalid(
            header_line,
            format!(
                "the header must start with `Optimizer` then the backbone names, separated by \
                 tabs{hint}"
            ),
        ));
    }
    let backbones: Vec<String> = header_cells.map(str::to_string).collect();
    if backbones.is_empty() {
        return Err(invalid(
            header_line,
            "the header names no backbone after `Optimizer`".into(),
        ));
    }
    for (i, name) in backbones.iter().enumerate() {
        if name.is_empty() {
            return Err(invalid(
                header_line,
                format!("backbone column {} has an empty name", i + 1),
            ));
        }
        if backbones[..i].contains(name) {
            return Err(invalid(
                header_line,
                format!("backbone `{name}` appears twice in the header"),
            ));
        }
    }
    let mut rows: Vec<(String, usize, Vec<String>)> = Vec::new();
    for (line, text) in lines {
        let mut cells = text.split('\t').map(str::trim);
        let optimizer = cells.next().unwrap_or_default().to_string();
        if SUMMARY_ROWS.contains(&optimizer.as_str()) {
            continue;
        }
        if optimizer.is_empty() {
            return Err(invalid(
                line,
                "the row has no optimizer name in its first cell".into(),
            ));
        }
        let cells: Vec<String> = cells.map(str::to_string).collect();
        if cells.len() != backbones.len() {
            return Err(invalid(
                line,
                format!(
                    "row `{optimizer}` has {} value(s) but the header names {} backbone(s); \
                     separate cells with tabs and leave a missing result empty or `-`",
                    cells.len(),
                    backbones.len()
                ),
            ));
        }
        if let Some((_, first, _)) = rows.iter().find(|(o, _, _)| *o == optimizer) {
            return Err(invalid(
                line,
                format!("optimizer `{optimizer}` already has a row (line {first})"),
            ));
        }
        rows.push((optimizer, line, cells));
    }
    Ok(Cells { backbones, rows })
}

fn is_missing(cell: &str) -> bool {
    cell.is_empty() || cell == "-"
}

/// A parsed results table.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedTable {
    /// Backbones in column order.
    pub backbones: Vec<String>,
    /// Optimizers in row order.
    pub optimizers: Vec<String>,
    /// The results, row by row.
    pub results: Vec<ImportedResult>,
}

/// Parses a results table; `path` names it in errors.
pub fn parse_table(text: &str, path: &str) -> Result<ParsedTable, TableError> {
    let cells = read_cells(text, path)?;
    if cells.rows.is_empty() {
        return Err(TableError::Empty {
            path: path.to_string(),
            message: "the table has no optimizer row".into(),
        });
    }
    let mut results = Vec::new();
    for (optimizer, line, row) in &cells.rows {
        for (backbone, cell) in cells.backbones.iter().zip(row) {
            if is_missing(cell) {
                continue;
            }
            let accuracy = cell
                .parse::<f64>()
                .ok()
                .filter(|a| (0.0..=100.0).contains(a))
                .ok_or_else(|| TableError::Invalid {
                    path: path.to_string(),
                    line: *line,
                    message: format!(
                        "`{cell}` ({optimizer} x {backbone}) is not an accuracy in percent \
                         (a number from 0 to 100; leave a missing result empty or `-`)"
                    ),
                })?;
            results.push(ImportedResult {
                backbone: backbone.clone(),
                optimizer: optimizer.clone(),
                accuracy,
                grid: None,
            });
        }
    }
    Ok(ParsedTable {
        optimizers: cells.rows.into_iter().map(|(o, _, _)| o).collect(),
        backbones: cells.backbones,
        results,
    })
}

/// Parses a grid-index file into positions per (backbone, optimizer).
/// Every name must be one of the table's.
pub fn parse_grid(
    text: &str,
    path: &str,
    backbones: &[String],
    optimizers: &[String],
) -> Result<BTreeMap<(String, String), GridPos>, TableError> {
    let cells = read_cells(text, path)?;
    let header_line = text
        .lines()
        .position(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map_or(1, |i| i + 1);
    if let Some(unknown) = cells.backbones.iter().find(|b| !backbones.contains(b)) {
        return Err(TableError::Invalid {
            path: path.to_string(),
            line: header_line,
            message: format!(
                "backbone `{unknown}` is not in the results table; its backbones are: {}",
                backbones.join(", ")
            ),
        });
    }
    let mut positions = BTreeMap::new();
    for (optimizer, line, row) in &cells.rows {
        let invalid = |message: String| TableError::Invalid {
            path: path.to_string(),
            line: *line,
            message,
        };
        if !optimizers.contains(optimizer) {
            return Err(invalid(format!(
                "optimizer `{optimizer}` is not in the results table; its optimizers are: {}",
                optimizers.join(", ")
            )));
        }
        for (backbone, cell) in cells.backbones.iter().zip(row) {
            if is_missing(cell) {
                continue;
            }
            let index = |part: Option<&str>| {
                part.and_then(|p| p.trim().parse::<u8>().ok())
                    .filter(|&i| usize::from(i) < GRID_POINTS)
            };
            let mut parts = cell.split('/');
            let (lr, weight_decay) = (index(parts.next()), index(parts.next()));
            match (lr, weight_decay, parts.next()) {
                (Some(lr), Some(weight_decay), None) => {
                    positions.insert(
                        (backbone.clone(), optimizer.clone()),
                        GridPos { lr, weight_decay },
                    );
                }
                _ => {
                    return Err(invalid(format!(
                        "`{cell}` ({optimizer} x {backbone}) is not a grid position; write \
                         LR_INDEX/WEIGHT_DECAY_INDEX with 0-based indices below {GRID_POINTS} \
                         (2/2 is the centre of both grids), or `-` when unknown"
                    )))
                }
            }
        }
    }
    Ok(positions)
}

/// Reads a results table and, when given, its grid file into the record
/// `bocb import` stores.
pub fn read_import(
    table: &Path,
    grid: Option<&Path>,
    experiment: &str,
    gamma: Option<f64>,
    imported_unix_s: u64,
) -> Result<ImportedTable, TableError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| TableError::Read {
            path: path.display().to_string(),
            source,
        })
    };
    let source = table.display().to_string();
    let ParsedTable {
        backbones,
        optimizers,
        mut results,
    } = parse_table(&read(table)?, &source)?;
    if let Some(grid) = grid {
        let positions = parse_grid(
            &read(grid)?,
            &grid.display().to_string(),
            &backbones,
            &optimizers,
        )?;
        for result in &mut results {
            result.grid = positions
                .get(&(result.backbone.clone(), result.optimizer.clone()))
                .copied();
        }
    }
    Ok(ImportedTable {
        experiment: experiment.to_string(),
        source,
        grid_source: grid.map(|g| g.display().to_string()),
        gamma,
        backbones,
        optimizers,
        results,
        imported_unix_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "Optimizer\tR-50\tDeiT-S\n\
        # a comment\n\
        SGD-M\t78.76\t63.20\r\n\
        \n\
        AdamW\t75.56\t-\n\
        Mean\t77.16\t63.20\n\
        Std/Range\t1.6/3\t0/0\n";

    #[test]
    fn reads_the_paper_layout() {
        let table = parse_table(TABLE, "t.tsv").unwrap();
        assert_eq!(table.backbones, ["R-50", "DeiT-S"]);
        assert_eq!(table.optimizers, ["SGD-M", "AdamW"]);
        let cells: Vec<(&str, &str, f64)> = table
            .results
            .iter()
            .map(|r| (r.backbone.as_str(), r.optimizer.as_str(), r.accuracy))
            .collect();
        assert_eq!(
            cells,
            [
                ("R-50", "SGD-M", 78.76),
                ("DeiT-S", "SGD-M", 63.20),
                ("R-50", "AdamW", 75.56)
            ]
        );
    }

    fn table_error(text: &str) -> String {
        parse_table(text, "t.tsv").unwrap_err().to_string()
    }

    #[test]
    fn malformed_tables_are_located() {
        let err = table_error("Optimizer R-50 DeiT-S\nSGD\t1\t2\n");
        assert!(err.starts_with("t.tsv:1: the header must start"), "{err}");
        assert!(err.contains("no tab found"), "{err}");
        let err = table_error("Optimizer\tR-50\tDeiT-S\nSGD\t78.1\n");
        assert!(
            err.starts_with("t.tsv:2: row `SGD` has 1 value(s) but the header names 2"),
            "{err}"
        );
        let err = table_error("Optimizer\tR-50\n\nSGD\t7x\n");
        assert!(
            err.starts_with("t.tsv:3: `7x` (SGD x R-50) is not an accuracy"),
            "{err}"
        );
        let err = table_error("Optimizer\tR-50\nSGD\t101\n");
        assert!(err.contains("`101`"), "{err}");
        let err = table_error("Optimizer\tR-50\nSGD\t70\nSGD\t71\n");
        assert!(
            err.starts_with("t.tsv:3: optimizer `SGD` already has a row (line 2)"),
            "{err}"
        );
        let err = table_error("Optimizer\tR-50\tR-50\nSGD\t70\t71\n");
        assert!(
            err.starts_with("t.tsv:1: backbone `R-50` appears twice"),
            "{err}"
        );
        let err = table_error("Optimizer\tR-50\nMean\t70\n");
        assert!(err.contains("no optimizer row"), "{err}");
        assert!(table_error("").contains("no header row"));
    }

    #[test]
    fn grid_files_name_positions_by_the_tables_names() {
        let backbones = vec!["R-50".to_string(), "DeiT-S".to_string()];
        let optimizers = vec!["SGD-M".to_string(), "AdamW".to_string()];
        let grid = "Optimizer\tDeiT-S\tR-50\nAdamW\t2/3\t-\nSGD-M\t0/4\t1/1\n";
        let positions = parse_grid(grid, "g.tsv", &backbones, &optimizers).unwrap();
        let at = |b: &str, o: &str| positions.get(&(b.to_string(), o.to_string())).copied();
        assert_eq!(
            at("DeiT-S", "AdamW"),
            Some(GridPos {
                lr: 2,
                weight_decay: 3
            })
        );
        assert_eq!(at("R-50", "AdamW"), None);
        assert_eq!(
            at("R-50", "SGD-M"),
            Some(GridPos {
                lr: 1,
                weight_decay: 1
            })
        );
        let err = parse_grid(
            "Optimizer\tR-50\nSGD-M\t5/1\n",
            "g.tsv",
            &backbones,
            &optimizers,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("g.tsv:2: `5/1` (SGD-M x R-50) is not a grid position"),
            "{err}"
        );
        let err = parse_grid(
            "Optimizer\tR-50\nSGD-M\t1/1/1\n",
            "g.tsv",
            &backbones,
            &optimizers,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("`1/1/1`"), "{err}");
        let err = parse_grid(
            "Optimizer\tVGG\nSGD-M\t1/1\n",
            "g.tsv",
            &backbones,
            &optimizers,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("g.tsv:1: backbone `VGG` is not in the results table"),
            "{err}"
        );
        let err = parse_grid(
            "Optimizer\tR-50\nLION\t1/1\n",
            "g.tsv",
            &backbones,
            &optimizers,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("g.tsv:2: optimizer `LION` is not in"),
            "{err}"
        );
    }
}
