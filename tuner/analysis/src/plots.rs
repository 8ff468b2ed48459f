//! The HTML report's figures as SVG, drawn with `plotters`: the Table 1
//! heat map, accuracy violins per backbone (the paper's Fig. 3), box plots
//! of the hyperparameter variation (Fig. 4, 5), ridge plots of the
//! layer-wise parameter patterns (Fig. 6) and each pair's learning curves;
//! with the numbers behind them (kernel density, box-plot statistics, the
//! colour scale).

use bocb_spec::LayerPattern;
use bocb_store::TrialRecord;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::patterns::PairPatterns;
use super::results::ResultSet;
use super::robustness::GroupRobustness;
use super::stats::{quantile_linear, sample_variance};
use super::table1::Table1Stats;

/// A figure could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("drawing the {figure} failed: {message}")]
pub struct PlotError {
    figure: &'static str,
    message: String,
}

type DrawResult<T = ()> = Result<T, DrawingAreaErrorKind<std::io::Error>>;

/// Draws a `width` x `height` figure with `draw` and returns its SVG.
fn svg(
    figure: &'static str,
    (width, height): (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> DrawResult,
) -> Result<String, PlotError> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (width, height)).into_drawing_area();
        root.fill(&WHITE)
            .and_then(|()| draw(&root))
            .and_then(|()| root.present())
            .map_err(|e| PlotError {
                figure,
                message: e.to_string(),
            })?;
    }
    Ok(out)
}

const FONT: &str = "sans-serif";
/// Pixels per character of the labels' font, a little generous (the SVG
/// backend cannot measure text).
const CHAR_WIDTH: u32 = 7;
const INK: RGBColor = RGBColor(40, 40, 40);
const FAILURE: RGBColor = RGBColor(214, 39, 40);
const HIGHLIGHT: RGBColor = RGBColor(220, 60, 30);
/// Tableau's ten categorical colours.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn text_style(size: f64, colour: &RGBColor, anchor: (HPos, VPos)) -> TextStyle<'_> {
    TextStyle::from((FONT, size).into_font())
        .color(colour)
        .pos(Pos::new(anchor.0, anchor.1))
}

fn label_width(names: &[String]) -> u32 {
    names
        .iter()
        .map(|n| n.chars().count() as u32)
        .max()
        .unwrap_or(0)
        * CHAR_WIDTH
        + 16
}

// ---------------------------------------------------------------------------
// Numbers behind the figures.

/// Scott's rule bandwidth (scipy's `gaussian_kde` default): sample standard
/// deviation times n^(-1/5). `None` below two values or without spread.
pub fn scott_bandwidth(samples: &[f64]) -> Option<f64> {
    let std = sample_variance(samples)?.sqrt();
    (std > 0.0).then(|| std * (samples.len() as f64).powf(-0.2))
}

/// Gaussian kernel density estimate of `samples` with `bandwidth`, at each
/// of `points`.
pub fn gaussian_kde(samples: &[f64], bandwidth: f64, points: &[f64]) -> Vec<f64> {
    let norm = 1.0 / (samples.len() as f64 * bandwidth * (2.0 * std::f64::consts::PI).sqrt());
    points
        .iter()
        .map(|&x| {
            norm * samples
                .iter()
                .map(|&s| (-0.5 * ((x - s) / bandwidth).powi(2)).exp())
                .sum::<f64>()
        })
        .collect()
}

/// `count` evenly spaced points from `low` to `high`.
fn linspace(low: f64, high: f64, count: usize) -> Vec<f64> {
    let step = (high - low) / (count - 1) as f64;
    (0..count).map(|i| low + step * i as f64).collect()
}

/// A box plot's numbers, as matplotlib draws them: quartiles by linear
/// interpolation, whiskers at the most extreme values within 1.5 IQR of the
/// box, the values beyond them as outliers.
#[derive(Debug, Clone, PartialEq)]
pub struct BoxStats {
    pub low_whisker: f64,
    pub q25: f64,
    pub median: f64,
    pub q75: f64,
    pub high_whisker: f64,
    pub outliers: Vec<f64>,
}

impl BoxStats {
    /// `None` for no values.
    pub fn new(values: &[f64]) -> Option<BoxStats> {
        if values.is_empty() {
            return None;
        }
        let (q25, median, q75) = (
            quantile_linear(values, 0.25),
            quantile_linear(values, 0.5),
            quantile_linear(values, 0.75),
        );
        let reach = 1.5 * (q75 - q25);
        let inside = |v: &&f64| (q25 - reach..=q75 + reach).contains(*v);
        Some(BoxStats {
            low_whisker: values.iter().filter(inside).copied().fold(q25, f64::min),
            high_whisker: values.iter().filter(inside).copied().fold(q75, f64::max),
            outliers: values.iter().filter(|v| !inside(v)).copied().collect(),
            q25,
            median,
            q75,
        })
    }
}

/// The heat map's colour scale: viridis from `low` (dark) to `high`
/// (bright). Results below `low` (failures, usually) get the darkest
/// colour so that they do not squeeze everyone else's contrast.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColourScale {
    pub low: f64,
    pub high: f64,
}

impl ColourScale {
    /// From the lowest result that is not a failure to the highest.
    pub fn of(results: &ResultSet, stats: &Table1Stats) -> ColourScale {
        let accuracies = |keep: &dyn Fn(&str, &str) -> bool| {
            results
                .results
                .iter()
                .filter(|r| keep(&r.backbone, &r.optimizer))
                .map(|r| r.accuracy)
                .collect::<Vec<f64>>()
        };
        let mut kept = accuracies(&|b, o| !stats.fails(b, o));
        if kept.is_empty() {
            kept = accuracies(&|_, _| true);
        }
        let low = kept.iter().copied().fold(f64::INFINITY, f64::min);
        let high = kept.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        ColourScale { low, high }
    }

    pub fn colour(&self, accuracy: f64) -> RGBColor {
        if self.high <= self.low {
            return ViridisRGB::get_color(0.5);
        }
        ViridisRGB::get_color(((accuracy - self.low) / (self.high - self.low)).clamp(0.0, 1.0))
    }
}

/// WCAG relative luminance of a colour, 0 (black) to 1 (white).
pub fn relative_luminance(colour: RGBColor) -> f64 {
    let linear = |c: u8| {
        let c = f64::from(c) / 255.0;
        if c <= 0.039_28 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    0.2126 * linear(colour.0) + 0.7152 * linear(colour.1) + 0.0722 * linear(colour.2)
}

/// Black or white, whichever reads better on `background`.
pub fn text_colour_on(background: RGBColor) -> RGBColor {
    if relative_luminance(background) > 0.18 {
        BLACK
    } else {
        WHITE
    }
}

/// `#rrggbb`, for the HTML tables that share the heat map's colours.
pub fn hex(colour: RGBColor) -> String {
    format!("#{:02x}{:02x}{:02x}", colour.0, colour.1, colour.2)
}

// ---------------------------------------------------------------------------
// Figures.

/// Table 1 as a heat map: optimizers as rows, backbones as columns, each
/// cell its accuracy; bold for the backbone's top-4, ✗ for a failure.
pub fn heat_map(results: &ResultSet, stats: &Table1Stats) -> Result<String, PlotError> {
    const CELL: (u32, u32) = (58, 26);
    const LEGEND: u32 = 110;
    let scale = ColourScale::of(results, stats);
    let left = label_width(&results.optimizers);
    let top = label_width(&results.backbones);
    let (columns, rows) = (
        results.backbones.len() as u32,
        results.optimizers.len() as u32,
    );
    let width = left + columns * CELL.0 + LEGEND;
    let height = (top + rows * CELL.1 + 12).max(top + 170);
    svg("Table 1 heat map", (width, height), |root| {
        let cell_origin =
            |column: u32, row: u32| ((left + column * CELL.0) as i32, (top + row * CELL.1) as i32);
        for (row, optimizer) in results.optimizers.iter().enumerate() {
            let (x, y) = cell_origin(0, row as u32);
            root.draw(&Text::new(
                optimizer.clone(),
                (x - 8, y + CELL.1 as i32 / 2),
                text_style(13.0, &INK, (HPos::Right, VPos::Center)),
            ))?;
        }
        for (column, backbone) in results.backbones.iter().enumerate() {
            let (x, y) = cell_origin(column as u32, 0);
            root.draw(&Text::new(
                backbone.clone(),
                (x + CELL.0 as i32 / 2, y - 8),
                text_style(13.0, &INK, (HPos::Left, VPos::Center))
                    .transform(FontTransform::Rotate270),
            ))?;
            for (row, optimizer) in results.optimizers.iter().enumerate() {
                let (x, y) = cell_origin(column as u32, row as u32);
                let corner = (x + CELL.0 as i32 - 1, y + CELL.1 as i32 - 1);
                let Some(result) = results.get(backbone, optimizer) else {
                    root.draw(&Rectangle::new(
                        [(x, y), corner],
                        RGBColor(235, 235, 235).filled(),
                    ))?;
                    continue;
                };
                let fill = scale.colour(result.accuracy);
                root.draw(&Rectangle::new([(x, y), corner], fill.filled()))?;
                let ink = text_colour_on(fill);
                let label = format!(
                    "{:.2}{}",
                    result.accuracy,
                    if stats.fails(backbone, optimizer) {
                        " ✗"
                    } else {
                        ""
                    }
                );
                let style = if stats.in_top4(backbone, optimizer) {
                    TextStyle::from((FONT, 13.0, FontStyle::Bold).into_font())
                        .color(&ink)
                        .pos(Pos::new(HPos::Center, VPos::Center))
                } else {
                    text_style(12.0, &ink, (HPos::Center, VPos::Center))
                };
                root.draw(&Text::new(
                    label,
                    (x + CELL.0 as i32 / 2, y + CELL.1 as i32 / 2),
                    style,
                ))?;
            }
        }
        // The colour bar.
        let (bar_x, bar_y) = (left + columns * CELL.0 + 22, top);
        let steps = 60;
        let bar_height = 150.0;
        for i in 0..steps {
            let share = i as f64 / (steps - 1) as f64;
            let accuracy = scale.high - share * (scale.high - scale.low);
            let y0 = bar_y as f64 + share * bar_height;
            root.draw(&Rectangle::new(
                [
                    (bar_x as i32, y0 as i32),
                    (
                        bar_x as i32 + 16,
                        (y0 + bar_height / steps as f64).ceil() as i32,
                    ),
                ],
                scale.colour(accuracy).filled(),
            ))?;
        }
        let legend = text_style(12.0, &INK, (HPos::Left, VPos::Center));
        root.draw(&Text::new(
            format!("{:.1}", scale.high),
            (bar_x as i32 + 22, bar_y as i32 + 4),
            legend.clone(),
        ))?;
        root.draw(&Text::new(
            format!("≤ {:.1}", scale.low),
            (bar_x as i32 + 22, (bar_y as f64 + bar_height) as i32 - 4),
            legend,
        ))?;
        Ok(())
    })
}

/// Draws `names` as category labels ending just left of pixel column `x`,
/// `y_of` giving the pixel row of each category.
fn category_labels(
    root: &DrawingArea<SVGBackend, Shift>,
    names: &[String],
    x: i32,
    y_of: impl Fn(usize) -> i32,
) -> DrawResult {
    for (i, name) in names.iter().enumerate() {
        root.draw(&Text::new(
            name.clone(),
            (x - 8, y_of(i)),
            text_style(13.0, &INK, (HPos::Right, VPos::Center)),
        ))?;
    }
    Ok(())
}

/// Row of category `index` of `count`, the first on top.
fn row_of(index: usize, count: usize) -> f64 {
    (count - 1 - index) as f64
}

/// Fig. 3: per backbone, the density of its accuracies over optimizers,
/// mirrored; the inner bar spans the quartiles, the white dot is the
/// median, dots are the optimizers' results (red: failures).
pub fn violins(results: &ResultSet, stats: &Table1Stats) -> Result<String, PlotError> {
    const ROW: u32 = 56;
    let count = results.backbones.len();
    let left = label_width(&results.backbones);
    let height = count as u32 * ROW + 70;
    let accuracies: Vec<Vec<(String, f64)>> = results
        .backbones
        .iter()
        .map(|b| {
            results
                .optimizers
                .iter()
                .filter_map(|o| Some((o.clone(), results.get(b, o)?.accuracy)))
                .collect()
        })
        .collect();
    let all: Vec<f64> = accuracies.iter().flatten().map(|(_, a)| *a).collect();
    let (low, high) = (
        all.iter().copied().fold(f64::INFINITY, f64::min),
        all.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    );
    let pad = ((high - low) * 0.08).max(1.0);
    svg("accuracy violins", (left + 820, height), |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .margin_left(left)
            .x_label_area_size(44)
            .build_cartesian_2d(low - pad..high + pad, -0.5..count as f64 - 0.5)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_desc("top-1 accuracy (%)")
            .max_light_lines(1)
            .label_style((FONT, 13.0))
            .axis_desc_style((FONT, 14.0))
            .draw()?;
        for (index, members) in accuracies.iter().enumerate() {
            let row = row_of(index, count);
            let colour = PALETTE[index % PALETTE.len()];
            let values: Vec<f64> = members.iter().map(|(_, a)| *a).collect();
            if let Some(bandwidth) = scott_bandwidth(&values) {
                // Two bandwidths past the extremes, as seaborn's `cut`.
                let lowest = values.iter().copied().fold(f64::INFINITY, f64::min);
                let highest = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let grid = linspace(
                    (lowest - 2.0 * bandwidth).max(low - pad),
                    (highest + 2.0 * bandwidth).min(high + pad),
                    120,
                );
                let density = gaussian_kde(&values, bandwidth, &grid);
                let peak = density.iter().copied().fold(0.0, f64::max);
                let half: Vec<f64> = density.iter().map(|d| 0.42 * d / peak).collect();
                let outline: Vec<(f64, f64)> = grid
                    .iter()
                    .zip(&half)
                    .map(|(&x, &w)| (x, row + w))
                    .chain(grid.iter().zip(&half).rev().map(|(&x, &w)| (x, row - w)))
                    .collect();
                chart.draw_series([Polygon::new(outline.clone(), colour.mix(0.45).filled())])?;
                chart.draw_series([PathElement::new(outline, colour.stroke_width(1))])?;
            }
            if let Some(box_stats) = BoxStats::new(&values) {
                chart.draw_series([
                    PathElement::new(
                        [(box_stats.low_whisker, row), (box_stats.high_whisker, row)],
                        INK.stroke_width(1),
                    ),
                    PathElement::new(
                        [(box_stats.q25, row), (box_stats.q75, row)],
                        INK.stroke_width(5),
                    ),
                ])?;
                chart.draw_series([Circle::new((box_stats.median, row), 3, WHITE.filled())])?;
            }
            let backbone = &results.backbones[index];
            chart.draw_series(members.iter().map(|(optimizer, accuracy)| {
                let failed = stats.fails(backbone, optimizer);
                let style = if failed {
                    FAILURE.filled()
                } else {
                    INK.mix(0.6).filled()
                };
                Circle::new((*accuracy, row + 0.3), if failed { 4 } else { 2 }, style)
            }))?;
        }
        let x = chart.backend_coord(&(low - pad, 0.0)).0;
        let y_of = |i: usize| chart.backend_coord(&(low - pad, row_of(i, count))).1;
        category_labels(root, &results.backbones, x, y_of)
    })
}

/// Fig. 4 / 5: per group (a backbone over its optimizers, or an optimizer
/// over its backbones), box plots of the members' Manhattan variation and
/// grid-step distance from the group's mode, with the values as dots.
pub fn variation_boxes(
    groups: &[GroupRobustness],
    figure: &'static str,
) -> Result<String, PlotError> {
    const ROW: u32 = 48;
    const MANHATTAN: RGBColor = PALETTE[0];
    const STEPS: RGBColor = PALETTE[1];
    let names: Vec<String> = groups.iter().map(|g| g.name.clone()).collect();
    let count = groups.len();
    let left = label_width(&names);
    let largest = groups
        .iter()
        .flat_map(|g| &g.variations)
        .map(|v| v.manhattan.max(v.grid_steps))
        .max()
        .unwrap_or(0);
    let x_high = f64::from(largest.max(4)) + 0.5;
    svg(
        figure,
        (left + 640, (count as u32 + 1) * ROW + 76),
        |root| {
            let mut chart = ChartBuilder::on(root)
                .margin(12)
                .margin_left(left)
                .x_label_area_size(44)
                // An empty row on top holds the legend.
                .build_cartesian_2d(-0.5..x_high, -0.5..count as f64 + 0.5)?;
            chart
                .configure_mesh()
                .disable_y_mesh()
                .y_labels(0)
                .x_labels((x_high as usize) + 1)
                .x_label_formatter(&|v| format!("{v:.0}"))
                .x_desc("variation from the mode (grid positions)")
                .label_style((FONT, 13.0))
                .axis_desc_style((FONT, 14.0))
                .draw()?;
            for (index, group) in groups.iter().enumerate() {
                let row = row_of(index, count);
                let measures: [(Vec<f64>, RGBColor, f64); 2] = [
                    (
                        group
                            .variations
                            .iter()
                            .map(|v| f64::from(v.manhattan))
                            .collect(),
                        MANHATTAN,
                        row + 0.18,
                    ),
                    (
                        group
                            .variations
                            .iter()
                            .map(|v| f64::from(v.grid_steps))
                            .collect(),
                        STEPS,
                        row - 0.18,
                    ),
                ];
                for (values, colour, y) in measures {
                    let Some(b) = BoxStats::new(&values) else {
                        continue;
                    };
                    let half = 0.13;
                    chart.draw_series([
                        PathElement::new([(b.low_whisker, y), (b.q25, y)], colour.stroke_width(1)),
                        PathElement::new([(b.q75, y), (b.high_whisker, y)], colour.stroke_width(1)),
                        PathElement::new(
                            [(b.median, y - half), (b.median, y + half)],
                            INK.stroke_width(3),
                        ),
                    ])?;
                    chart.draw_series([Rectangle::new(
                        [(b.q25, y - half), (b.q75, y + half)],
                        colour.mix(0.35).filled(),
                    )])?;
                    chart.draw_series([Rectangle::new(
                        [(b.q25, y - half), (b.q75, y + half)],
                        colour.stroke_width(1),
                    )])?;
                    chart.draw_series([PathElement::new(
                        [(b.median, y - half), (b.median, y + half)],
                        INK.stroke_width(2),
                    )])?;
                    // The values themselves, spread vertically so that equal
                    // ones stay countable.
                    let n = values.len().max(2) as f64;
                    chart.draw_series(values.iter().enumerate().map(|(i, &v)| {
                        let jitter = (i as f64 / (n - 1.0) - 0.5) * 2.0 * half * 0.8;
                        Circle::new((v, y + jitter), 2, colour.mix(0.9).filled())
                    }))?;
                }
            }
            chart
                .draw_series(std::iter::empty::<Circle<(f64, f64), u32>>())?
                .label("Manhattan distance of the one-hot codes")
                .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], MANHATTAN.filled()));
            chart
                .draw_series(std::iter::empty::<Circle<(f64, f64), u32>>())?
                .label("grid steps |index − mode|")
                .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], STEPS.filled()));
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .label_font((FONT, 12.0))
                .background_style(WHITE.mix(0.85))
                .border_style(INK)
                .draw()?;
            let x = chart.backend_coord(&(-0.5, 0.0)).0;
            let y_of = |i: usize| chart.backend_coord(&(-0.5, row_of(i, count))).1;
            category_labels(root, &names, x, y_of)
        },
    )
}

/// One of the layer-wise measures of App. A.3.
struct Measure {
    title: &'static str,
    value: fn(&LayerPattern) -> Option<f64>,
}

const MEASURES: [Measure; 4] = [
    Measure {
        title: "PL exponent α",
        value: |l| l.alpha,
    },
    Measure {
        title: "entropy (nats)",
        value: |l| Some(l.entropy),
    },
    Measure {
        title: "L2 norm",
        value: |l| Some(l.l2_norm),
    },
    Measure {
        title: "top-k PCA energy",
        value: |l| l.top_k_energy,
    },
];

/// Fig. 6: for each measure a panel of ridges, one per pair, over its
/// weight matrices in layer order (a layer without the measure, such as α
/// of a matrix too small to fit, is skipped). Ridge heights share one
/// scale per measure, so pairs compare.
pub fn ridges(pairs: &[PairPatterns]) -> Result<String, PlotError> {
    const ROW: u32 = 34;
    const OVERLAP: f64 = 1.6;
    let names: Vec<String> = pairs
        .iter()
        .map(|p| format!("{} × {}", p.backbone, p.optimizer))
        .collect();
    let layers: Vec<Vec<&LayerPattern>> = pairs
        .iter()
        .map(|p| {
            p.layers
                .iter()
                .filter(|l| l.top_k_energy.is_some())
                .collect()
        })
        .collect();
    let most_layers = layers.iter().map(Vec::len).max().unwrap_or(1).max(2);
    let count = pairs.len();
    let left = label_width(&names);
    let height = count as u32 * ROW + 110;
    let optimizers: Vec<&str> = {
        let mut seen: Vec<&str> = Vec::new();
        for p in pairs {
            if !seen.contains(&p.optimizer.as_str()) {
                seen.push(&p.optimizer);
            }
        }
        seen
    };
    svg(
        "parameter-pattern ridges",
        (left + 4 * 270, height),
        |root| {
            let (labels, panels) = root.split_horizontally(left);
            let mut rows_at: Vec<i32> = Vec::new();
            for (panel, measure) in panels
                .split_evenly((1, MEASURES.len()))
                .iter()
                .zip(&MEASURES)
            {
                let values: Vec<f64> = layers
                    .iter()
                    .flatten()
                    .filter_map(|l| (measure.value)(l))
                    .filter(|v| v.is_finite())
                    .collect();
                let low = values.iter().copied().fold(f64::INFINITY, f64::min);
                let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let span = if high > low { high - low } else { 1.0 };
                let title = if values.is_empty() {
                    format!("{} (none)", measure.title)
                } else {
                    format!("{} ({} to {})", measure.title, short(low), short(high))
                };
                let mut chart = ChartBuilder::on(panel)
                    .caption(title, (FONT, 15.0))
                    .margin(8)
                    .margin_right(18)
                    .x_label_area_size(40)
                    .build_cartesian_2d(
                        0.0..(most_layers - 1) as f64,
                        -0.2..count as f64 - 1.0 + OVERLAP + 0.1,
                    )?;
                chart
                    .configure_mesh()
                    .disable_y_mesh()
                    .y_labels(0)
                    .x_desc("layer (weight matrices in order)")
                    .x_labels(5)
                    .x_label_formatter(&|v| format!("{v:.0}"))
                    .label_style((FONT, 12.0))
                    .axis_desc_style((FONT, 13.0))
                    .draw()?;
                // Top row first, so each ridge overlaps the one above it.
                for (index, pair_layers) in layers.iter().enumerate() {
                    let baseline = row_of(index, count);
                    let colour = PALETTE[optimizers
                        .iter()
                        .position(|o| *o == pairs[index].optimizer)
                        .unwrap_or(0)
                        % PALETTE.len()];
                    let points: Vec<(f64, f64)> = pair_layers
                        .iter()
                        .enumerate()
                        .filter_map(|(i, l)| {
                            let v = (measure.value)(l).filter(|v| v.is_finite())?;
                            Some((i as f64, baseline + OVERLAP * (v - low) / span))
                        })
                        .collect();
                    chart.draw_series(AreaSeries::new(
                        points.clone(),
                        baseline,
                        colour.mix(0.55).filled(),
                    ))?;
                    chart.draw_series(LineSeries::new(points, WHITE.stroke_width(1)))?;
                }
                if rows_at.is_empty() {
                    rows_at = (0..count)
                        .map(|i| chart.backend_coord(&(0.0, row_of(i, count) + 0.3)).1)
                        .collect();
                }
            }
            category_labels(&labels, &names, left as i32, |i| rows_at[i])
        },
    )
}

/// A short number for axis titles: three significant digits.
fn short(value: f64) -> String {
    if value != 0.0 && (value.abs() >= 1e4 || value.abs() < 1e-2) {
        format!("{value:.2e}")
    } else {
        format!("{:.3}", value)
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

/// Small multiples, one panel per pair with trials: the test accuracy per
/// epoch of every trial, the best config's seeds highlighted. Panels share
/// the accuracy axis.
pub fn learning_curves(results: &ResultSet, trials: &[TrialRecord]) -> Result<String, PlotError> {
    const PANEL: (u32, u32) = (320, 240);
    const COLUMNS: usize = 4;
    let pairs: Vec<(&String, &String)> = results
        .backbones
        .iter()
        .flat_map(|b| results.optimizers.iter().map(move |o| (b, o)))
        .filter(|(b, o)| {
            trials
                .iter()
                .any(|t| &&t.backbone == b && &&t.optimizer == o)
        })
        .collect();
    let curve = |t: &TrialRecord| -> Vec<(f64, f64)> {
        t.epochs
            .iter()
            .filter(|e| e.test_accuracy.is_finite())
            .map(|e| (f64::from(e.epoch), e.test_accuracy))
            .collect()
    };
    let top = trials
        .iter()
        .flat_map(|t| curve(t).into_iter().map(|(_, a)| a))
        .fold(1.0, f64::max);
    let last_epoch = trials
        .iter()
        .flat_map(|t| t.epochs.iter().map(|e| f64::from(e.epoch)))
        .fold(2.0, f64::max);
    let columns = pairs.len().clamp(1, COLUMNS);
    let rows = pairs.len().div_ceil(columns).max(1);
    let size = (PANEL.0 * columns as u32, PANEL.1 * rows as u32);
    svg("learning curves", size, |root| {
        for (panel, (backbone, optimizer)) in root.split_evenly((rows, columns)).iter().zip(&pairs)
        {
            let best = results.get(backbone, optimizer);
            let best_ids: &[String] = best.map_or(&[], |r| &r.trial_ids);
            let title = match best {
                Some(r) => format!("{backbone} × {optimizer}: {:.2}", r.accuracy),
                None => format!("{backbone} × {optimizer}: no finished trial"),
            };
            let mut chart = ChartBuilder::on(panel)
                .caption(title, (FONT, 13.0))
                .margin(8)
                .x_label_area_size(26)
                .y_label_area_size(36)
                .build_cartesian_2d(1.0..last_epoch, 0.0..top * 1.05)?;
            chart
                .configure_mesh()
                .x_labels(6)
                .y_labels(5)
                .x_label_formatter(&|v| format!("{v:.0}"))
                .y_label_formatter(&|v| format!("{v:.0}"))
                .label_style((FONT, 11.0))
                .light_line_style(RGBColor(240, 240, 240))
                .draw()?;
            let mine = trials
                .iter()
                .filter(|t| &&t.backbone == backbone && &&t.optimizer == optimizer);
            let (highlighted, others): (Vec<&TrialRecord>, Vec<&TrialRecord>) =
                mine.partition(|t| best_ids.contains(&t.id));
            for t in others {
                chart.draw_series(LineSeries::new(
                    curve(t),
                    PALETTE[0].mix(0.35).stroke_width(1),
                ))?;
            }
            for t in highlighted {
                let points = curve(t);
                chart.draw_series(LineSeries::new(points.clone(), HIGHLIGHT.stroke_width(3)))?;
                chart.draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 3, HIGHLIGHT.filled())),
                )?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kde_integrates_to_one_and_matches_the_kernel() {
        let samples = [61.0, 70.5, 71.0, 72.5, 80.0, 30.0];
        let bandwidth = scott_bandwidth(&samples).unwrap();
        let lowest = 30.0 - 8.0 * bandwidth;
        let highest = 80.0 + 8.0 * bandwidth;
        let grid = linspace(lowest, highest, 4001);
        let density = gaussian_kde(&samples, bandwidth, &grid);
        let step = grid[1] - grid[0];
        let integral: f64 = density.windows(2).map(|w| (w[0] + w[1]) / 2.0 * step).sum();
        assert!((integral - 1.0).abs() < 1e-4, "{integral}");
        // One sample: the normal density, 1 / sqrt(2 pi) at its centre and
        // exp(-1/2) of that one bandwidth away.
        let peak = 1.0 / (2.0 * std::f64::consts::PI).sqrt();
        let one = gaussian_kde(&[5.0], 2.0, &[5.0, 7.0]);
        assert!((one[0] - peak / 2.0).abs() < 1e-12);
        assert!((one[1] - peak / 2.0 * (-0.5f64).exp()).abs() < 1e-12);
        // Scott: sample std 1 of [1, 2, 3], times 3^(-1/5).
        let h = scott_bandwidth(&[1.0, 2.0, 3.0]).unwrap();
        assert!((h - 3.0f64.powf(-0.2)).abs() < 1e-12);
        assert_eq!(scott_bandwidth(&[4.0]), None);
        assert_eq!(scott_bandwidth(&[4.0, 4.0]), None);
    }

    #[test]
    fn box_stats_by_hand() {
        // Sorted 1 2 3 4 100: Q25 at position 1 = 2, median 3, Q75 = 4;
        // IQR 2, so the whiskers reach 2 - 3 = -1 and 4 + 3 = 7: the low
        // one stops at 1, the high one at 4, and 100 is an outlier.
        let b = BoxStats::new(&[4.0, 100.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(
            b,
            BoxStats {
                low_whisker: 1.0,
                q25: 2.0,
                median: 3.0,
                q75: 4.0,
                high_whisker: 4.0,
                outliers: vec![100.0],
            }
        );
        // Interpolated quartiles: 0 2 2 4 over positions 0..3: Q25 at 0.75
        // = 1.5, median 2, Q75 at 2.25 = 2.5; the reach 1.5 IQR = 1.5 ends
        // exactly at 0 and 4, which stay inside.
        let b = BoxStats::new(&[0.0, 2.0, 4.0, 2.0]).unwrap();
        assert_eq!((b.q25, b.median, b.q75), (1.5, 2.0, 2.5));
        assert_eq!((b.low_whisker, b.high_whisker), (0.0, 4.0));
        assert!(b.outliers.is_empty());
        // No spread in the box: whiskers collapse, both extremes are outliers.
        let b = BoxStats::new(&[0.0, 2.0, 2.0, 2.0, 10.0]).unwrap();
        assert_eq!(
            (b.low_whisker, b.q25, b.q75, b.high_whisker),
            (2.0, 2.0, 2.0, 2.0)
        );
        assert_eq!(b.outliers, [0.0, 10.0]);
        assert_eq!(BoxStats::new(&[]), None);
    }

    #[test]
    fn heat_map_colours_brighten_with_accuracy() {
        let scale = ColourScale {
            low: 60.0,
            high: 80.0,
        };
        let luminance: Vec<f64> = (0..=40)
            .map(|i| relative_luminance(scale.colour(55.0 + 0.75 * f64::from(i))))
            .collect();
        for pair in luminance.windows(2) {
            assert!(pair[1] >= pair[0], "{luminance:?}");
        }
        // Strictly inside the scale, and clamped outside it.
        assert!(relative_luminance(scale.colour(61.0)) < relative_luminance(scale.colour(79.0)));
        assert_eq!(scale.colour(10.0), scale.colour(60.0));
        assert_eq!(scale.colour(95.0), scale.colour(80.0));
        assert_eq!(text_colour_on(scale.colour(60.0)), WHITE);
        assert_eq!(text_colour_on(scale.colour(80.0)), BLACK);
        assert_eq!(hex(RGBColor(255, 8, 171)), "#ff08ab");
    }
}
