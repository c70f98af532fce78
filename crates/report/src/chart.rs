//! Chart descriptions and their drawing with plotters, to SVG text and to PNG files.
//!
//! A chart is first described as data (`Chart`: series of points, axes, legend) by `charts.rs`,
//! then drawn by one function for both backends, so the PNG and the SVG show the same thing.
//! Text is laid out with the DejaVu Sans font embedded in this crate (plotters' `ab_glyph`
//! font registry) and drawn on bitmaps by `glyphs.rs`: no system font libraries are needed.
//! SVG text names the font family and lets the viewer render it.

use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::ReportError;
use crate::glyphs::GlyphText;
use crate::group::trim_float;

/// Font family of every text. The same name is registered with plotters (so layout uses the
/// embedded font's metrics) and written into SVGs, where it falls back to any sans-serif.
pub(crate) const FONT: &str = "DejaVu Sans, sans-serif";
pub(crate) static FONT_REGULAR: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
pub(crate) static FONT_BOLD: &[u8] = include_bytes!("../assets/DejaVuSans-Bold.ttf");

fn ensure_fonts() -> Result<(), ReportError> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            plotters::style::register_font(FONT, FontStyle::Normal, FONT_REGULAR)
                .map_err(|_| "DejaVuSans.ttf".to_string())?;
            plotters::style::register_font(FONT, FontStyle::Bold, FONT_BOLD)
                .map_err(|_| "DejaVuSans-Bold.ttf".to_string())
        })
        .clone()
        .map_err(ReportError::Font)
}

const HEADER_H: u32 = 92;
const LEGEND_W: u32 = 330;
const GRID_LIGHT: RGBColor = RGBColor(236, 236, 236);
const GRID_BOLD: RGBColor = RGBColor(205, 205, 205);
const SUBTITLE: RGBColor = RGBColor(85, 85, 85);

/// One chart: a title, a subtitle (which group it is about) and a body.
pub(crate) struct Chart {
    /// File name without extension.
    pub name: &'static str,
    pub title: String,
    pub subtitle: String,
    pub size: (u32, u32),
    pub body: Body,
}

pub(crate) enum Body {
    Lines(LineChart),
    Bars(BarPanels),
}

/// Lines over a numeric x axis.
pub(crate) struct LineChart {
    pub x: XAxis,
    pub y_desc: String,
    pub y_range: (f64, f64),
    pub series: Vec<Series>,
    /// The y axis is in percent (labels `40%`); otherwise plain numbers.
    pub y_percent: bool,
    /// The legend's heading (`Policy`, `Router`).
    pub legend_title: &'static str,
}

pub(crate) struct XAxis {
    pub desc: String,
    /// Log10 scale (data stay in their own units; the axis maps them).
    pub log: bool,
    pub range: (f64, f64),
    /// Tick positions in data units.
    pub ticks: Vec<f64>,
    pub labels: TickLabels,
    /// A second scale on top: (description, top units per x unit), e.g. GiB per block.
    pub top: Option<(String, f64)>,
}

#[derive(Clone, Copy)]
pub(crate) enum TickLabels {
    /// Counts: 500, 5000, 10k, 1.5M.
    Count,
    /// Plain numbers: 0, 2.5, 10.
    Plain,
}

impl XAxis {
    fn axis_of(&self, x: f64) -> f64 {
        if self.log {
            x.log10()
        } else {
            x
        }
    }
    fn data_at(&self, x: f64) -> f64 {
        if self.log {
            10f64.powf(x)
        } else {
            x
        }
    }
}

pub(crate) struct Series {
    pub label: String,
    pub color: RGBColor,
    pub kind: SeriesKind,
    pub points: Vec<(f64, f64)>,
    /// Points further apart than this on x are not joined (a hole in a time series).
    pub max_gap: Option<f64>,
}

/// Above this many points a line has no markers (they would merge into a thick band).
const MAX_MARKERS: usize = 40;

impl Series {
    /// Runs of points to join with lines.
    fn runs(&self) -> Vec<Vec<(f64, f64)>> {
        let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
        for &p in &self.points {
            match runs.last_mut() {
                Some(run)
                    if self
                        .max_gap
                        .is_none_or(|g| run.last().is_none_or(|q| p.0 - q.0 <= g)) =>
                {
                    run.push(p)
                }
                _ => runs.push(vec![p]),
            }
        }
        runs
    }
}

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum SeriesKind {
    /// A policy: line with round markers.
    Line,
    /// The offline bound (Belady): thick line with triangle markers.
    Bound,
    /// A reference (ideal, 0%/100% lines): dashed, no markers.
    Dashed,
}

/// Small multiples of stacked bars, one panel per policy.
pub(crate) struct BarPanels {
    pub panels: Vec<BarPanel>,
    /// Stack segments bottom to top: (legend label, color).
    pub segments: Vec<(String, RGBColor)>,
    pub x_desc: String,
    pub y_desc: String,
    /// Panels per row.
    pub cols: usize,
}

pub(crate) struct BarPanel {
    pub title: String,
    /// One label per bar.
    pub labels: Vec<String>,
    /// One stack per bar, in percent, one value per segment; `None`: no row (e.g. the point
    /// failed), shown as "n/a".
    pub stacks: Vec<Option<Vec<f64>>>,
}

/// A linear f64 axis whose ticks are exactly the given values (the grid's capacities, the
/// bars' positions), with no light grid lines between them.
#[derive(Clone)]
struct TickAxis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl TickAxis {
    fn new(range: Range<f64>, ticks: Vec<f64>) -> Self {
        TickAxis {
            lo: range.start,
            hi: range.end,
            ticks,
        }
    }
}

impl Ranged for TickAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        if self.hi == self.lo {
            return (limit.0 + limit.1) / 2;
        }
        let t = (v - self.lo) / (self.hi - self.lo);
        limit.0 + (t * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

/// The chart as an SVG document.
pub(crate) fn render_svg(chart: &Chart) -> Result<String, ReportError> {
    ensure_fonts()?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, chart.size).into_drawing_area();
        draw(&root, chart).map_err(|reason| render_err(chart, reason))?;
        root.present()
            .map_err(|e| render_err(chart, e.to_string()))?;
    }
    Ok(svg)
}

/// The chart as a PNG file.
pub(crate) fn render_png(chart: &Chart, path: &Path) -> Result<(), ReportError> {
    ensure_fonts()?;
    let (w, h) = chart.size;
    let mut rgb = vec![255u8; w as usize * h as usize * 3];
    {
        let root = GlyphText(BitMapBackend::with_buffer(&mut rgb, (w, h))).into_drawing_area();
        draw(&root, chart).map_err(|reason| render_err(chart, reason))?;
        root.present()
            .map_err(|e| render_err(chart, e.to_string()))?;
    }
    let file = std::fs::File::create(path).map_err(|e| ReportError::io(path, e))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    // One fixed row filter: charts are mostly flat colors, Sub turns them into zeros, and
    // the adaptive filter search would take more time than the drawing (files ~25% larger).
    enc.set_compression(png::Compression::Balanced);
    enc.set_filter(png::Filter::Sub);
    let png_err = |e: png::EncodingError| match e {
        png::EncodingError::IoError(e) => ReportError::io(path, e),
        other => render_err(chart, other.to_string()),
    };
    let mut writer = enc.write_header().map_err(png_err)?;
    writer.write_image_data(&rgb).map_err(png_err)?;
    writer.finish().map_err(png_err)
}

fn render_err(chart: &Chart, reason: String) -> ReportError {
    ReportError::Render {
        chart: chart.name.to_string(),
        reason,
    }
}

fn s<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

fn font(size: u32) -> TextStyle<'static> {
    (FONT, size).into_font().color(&BLACK)
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, chart: &Chart) -> Result<(), String> {
    root.fill(&WHITE).map_err(s)?;
    let title = (FONT, 30).into_font().style(FontStyle::Bold).color(&BLACK);
    root.draw(&Text::new(chart.title.clone(), (24, 16), title))
        .map_err(s)?;
    if !chart.subtitle.is_empty() {
        let sub = (FONT, 20).into_font().color(&SUBTITLE);
        root.draw(&Text::new(chart.subtitle.clone(), (24, 56), sub))
            .map_err(s)?;
    }
    let (_, body) = root.split_vertically(HEADER_H);
    let (w, _) = body.dim_in_pixel();
    let (plot, legend) = body.split_horizontally(w.saturating_sub(LEGEND_W));
    match &chart.body {
        Body::Lines(c) => {
            draw_lines(&plot, c)?;
            let entries: Vec<LegendEntry> = c
                .series
                .iter()
                .map(|s| LegendEntry {
                    label: s.label.clone(),
                    color: s.color,
                    mark: LegendMark::Line(s.kind),
                })
                .collect();
            draw_legend(&legend, c.legend_title, &entries)
        }
        Body::Bars(b) => {
            draw_bars(&plot, b)?;
            let entries: Vec<LegendEntry> = b
                .segments
                .iter()
                .rev()
                .map(|(label, color)| LegendEntry {
                    label: label.clone(),
                    color: *color,
                    mark: LegendMark::Box,
                })
                .collect();
            draw_legend(&legend, "Prompt tokens", &entries)
        }
    }
}

fn percent_formatter(range: (f64, f64)) -> impl Fn(&f64) -> String {
    let decimals = if range.1 - range.0 <= 5.0 { 1 } else { 0 };
    move |v: &f64| format!("{v:.decimals$}%")
}

/// Plain numbers with as many decimals as the range needs (0.05, 1.5, 20).
fn plain_formatter(range: (f64, f64)) -> impl Fn(&f64) -> String {
    let span = range.1 - range.0;
    let decimals = if span <= 0.05 {
        3
    } else if span <= 0.5 {
        2
    } else if span <= 5.0 {
        1
    } else {
        0
    };
    move |v: &f64| format!("{v:.decimals$}")
}

fn draw_lines<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    c: &LineChart,
) -> Result<(), String> {
    let x = &c.x;
    let (x0, x1) = (x.axis_of(x.range.0), x.axis_of(x.range.1));
    let ticks: Vec<f64> = x.ticks.iter().map(|&t| x.axis_of(t)).collect();
    let mut builder = ChartBuilder::on(area);
    builder
        .margin_left(12)
        .margin_right(36)
        .margin_top(if x.top.is_some() { 84 } else { 16 })
        .margin_bottom(8)
        .x_label_area_size(82)
        .y_label_area_size(100);
    let mut cc = builder
        .build_cartesian_2d(
            TickAxis::new(x0..x1, ticks.clone()),
            c.y_range.0..c.y_range.1,
        )
        .map_err(s)?;
    let x_fmt = |v: &f64| match x.labels {
        TickLabels::Count => fmt_count(x.data_at(*v)),
        TickLabels::Plain => trim_float(x.data_at(*v)),
    };
    let (pct, plain) = (percent_formatter(c.y_range), plain_formatter(c.y_range));
    let y_fmt = |v: &f64| if c.y_percent { pct(v) } else { plain(v) };
    cc.configure_mesh()
        .x_desc(c.x.desc.as_str())
        .y_desc(c.y_desc.as_str())
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .label_style(font(20))
        .axis_desc_style(font(22))
        .light_line_style(GRID_LIGHT)
        .bold_line_style(GRID_BOLD)
        .max_light_lines(1)
        .y_labels(11)
        .draw()
        .map_err(s)?;
    for series in &c.series {
        let color = series.color;
        let markers = series.points.len() <= MAX_MARKERS;
        for run in series.runs() {
            let pts: Vec<(f64, f64)> = run.iter().map(|&(px, py)| (x.axis_of(px), py)).collect();
            match series.kind {
                SeriesKind::Line => {
                    cc.draw_series(LineSeries::new(pts.clone(), color.stroke_width(3)))
                        .map_err(s)?;
                    if markers || pts.len() == 1 {
                        cc.draw_series(pts.iter().map(|&p| Circle::new(p, 5, color.filled())))
                            .map_err(s)?;
                    }
                }
                SeriesKind::Bound => {
                    cc.draw_series(LineSeries::new(pts.clone(), color.stroke_width(4)))
                        .map_err(s)?;
                    if markers || pts.len() == 1 {
                        cc.draw_series(
                            pts.iter()
                                .map(|&p| TriangleMarker::new(p, 8, color.filled())),
                        )
                        .map_err(s)?;
                    }
                }
                SeriesKind::Dashed if pts.len() == 1 => {
                    cc.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                        .map_err(s)?;
                }
                SeriesKind::Dashed => {
                    cc.draw_series(DashedLineSeries::new(pts, 14, 9, color.stroke_width(3)))
                        .map_err(s)?;
                }
            }
        }
    }
    if let Some((desc, per_unit)) = &x.top {
        // A second scale on top (GiB). Drawn by hand: plotters' secondary axes would also
        // repeat the primary labels there.
        let base = area.get_base_pixel();
        let at = |v: f64| {
            let (px, py) = cc.backend_coord(&(v, c.y_range.1));
            (px - base.0, py - base.1)
        };
        let (left, top) = at(x0);
        let (right, _) = at(x1);
        area.draw(&PathElement::new(vec![(left, top), (right, top)], BLACK))
            .map_err(s)?;
        let tick_font = font(20).pos(Pos::new(HPos::Center, VPos::Bottom));
        for &t in &ticks {
            let (px, _) = at(t);
            area.draw(&PathElement::new(vec![(px, top), (px, top - 6)], BLACK))
                .map_err(s)?;
            area.draw(&Text::new(
                fmt_gib(x.data_at(t) * per_unit),
                (px, top - 10),
                tick_font.clone(),
            ))
            .map_err(s)?;
        }
        let desc_font = font(22).pos(Pos::new(HPos::Center, VPos::Bottom));
        area.draw(&Text::new(
            desc.clone(),
            ((left + right) / 2, top - 44),
            desc_font,
        ))
        .map_err(s)?;
    }
    Ok(())
}

fn draw_bars<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    b: &BarPanels,
) -> Result<(), String> {
    let cols = b.cols.max(1);
    let rows = b.panels.len().div_ceil(cols).max(1);
    // every `step`-th bar label, so that labels do not run into each other
    let panel_w = (area.dim_in_pixel().0 as usize / cols)
        .saturating_sub(115)
        .max(1);
    let label_w = b
        .panels
        .iter()
        .flat_map(|p| p.labels.iter().map(|l| l.chars().count()))
        .max()
        .unwrap_or(1)
        * 11
        + 12;
    let n_bars = b.panels.iter().map(|p| p.labels.len()).max().unwrap_or(1);
    let step = (n_bars * label_w).div_ceil(panel_w).max(1);
    let cells = area.split_evenly((rows, cols));
    for (i, (panel, cell)) in b.panels.iter().zip(cells.iter()).enumerate() {
        let n = panel.labels.len().max(1);
        // the same label areas everywhere, so that all panels have the same plot size
        let bottom_row = i + cols >= b.panels.len();
        let left_col = i % cols == 0;
        let mut cc = ChartBuilder::on(cell)
            .caption(panel.title.as_str(), font(22))
            .margin(10)
            .x_label_area_size(70)
            .y_label_area_size(95)
            .build_cartesian_2d(
                TickAxis::new(-0.5..n as f64 - 0.5, (0..n).map(|k| k as f64).collect()),
                0.0..100.0,
            )
            .map_err(s)?;
        let labels = &panel.labels;
        let x_fmt = |v: &f64| {
            let k = v.round();
            if k >= 0.0 && (k as usize) < labels.len() && (k as usize) % step == 0 {
                labels[k as usize].clone()
            } else {
                String::new()
            }
        };
        let mut mesh = cc.configure_mesh();
        mesh.disable_x_mesh()
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&|v: &f64| format!("{v:.0}%"))
            .label_style(font(17))
            .axis_desc_style(font(19))
            .light_line_style(GRID_LIGHT)
            .bold_line_style(GRID_BOLD)
            .max_light_lines(1)
            .y_labels(6);
        if bottom_row {
            mesh.x_desc(b.x_desc.as_str());
        }
        if left_col {
            mesh.y_desc(b.y_desc.as_str());
        }
        mesh.draw().map_err(s)?;
        let half = if n > 12 { 0.42 } else { 0.36 };
        let missing = font(17)
            .color(&SUBTITLE)
            .pos(Pos::new(HPos::Center, VPos::Bottom));
        for (k, stack) in panel.stacks.iter().enumerate() {
            let Some(stack) = stack else {
                cc.draw_series(std::iter::once(Text::new(
                    "n/a",
                    (k as f64, 3.0),
                    missing.clone(),
                )))
                .map_err(s)?;
                continue;
            };
            let mut y = 0.0;
            for (v, (_, color)) in stack.iter().zip(&b.segments) {
                let top = (y + v).min(100.0);
                if top > y {
                    cc.draw_series(std::iter::once(Rectangle::new(
                        [(k as f64 - half, y), (k as f64 + half, top)],
                        color.filled(),
                    )))
                    .map_err(s)?;
                }
                y = top;
            }
        }
    }
    Ok(())
}

struct LegendEntry {
    label: String,
    color: RGBColor,
    mark: LegendMark,
}

enum LegendMark {
    Line(SeriesKind),
    Box,
}

const LEGEND_CHARS: usize = 24;

fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    heading: &str,
    entries: &[LegendEntry],
) -> Result<(), String> {
    let bold = (FONT, 20).into_font().style(FontStyle::Bold).color(&BLACK);
    area.draw(&Text::new(heading.to_string(), (12, 26), bold))
        .map_err(s)?;
    let text = font(19).pos(Pos::new(HPos::Left, VPos::Center));
    let mut y = 72;
    for e in entries {
        let c = e.color;
        match e.mark {
            LegendMark::Line(SeriesKind::Line) => {
                area.draw(&PathElement::new(vec![(12, y), (60, y)], c.stroke_width(3)))
                    .map_err(s)?;
                area.draw(&Circle::new((36, y), 5, c.filled())).map_err(s)?;
            }
            LegendMark::Line(SeriesKind::Bound) => {
                area.draw(&PathElement::new(vec![(12, y), (60, y)], c.stroke_width(4)))
                    .map_err(s)?;
                area.draw(&TriangleMarker::new((36, y), 8, c.filled()))
                    .map_err(s)?;
            }
            LegendMark::Line(SeriesKind::Dashed) => {
                for (a, b) in [(12, 26), (35, 49), (58, 60)] {
                    area.draw(&PathElement::new(vec![(a, y), (b, y)], c.stroke_width(3)))
                        .map_err(s)?;
                }
            }
            LegendMark::Box => {
                area.draw(&Rectangle::new([(16, y - 11), (56, y + 11)], c.filled()))
                    .map_err(s)?;
                area.draw(&Rectangle::new([(16, y - 11), (56, y + 11)], GRID_BOLD))
                    .map_err(s)?;
            }
        }
        let lines = wrap(&e.label, LEGEND_CHARS);
        for (i, line) in lines.iter().enumerate() {
            area.draw(&Text::new(
                line.clone(),
                (72, y + 24 * i as i32),
                text.clone(),
            ))
            .map_err(s)?;
        }
        y += 24 * lines.len() as i32 + 18;
    }
    Ok(())
}

/// Break a legend label into lines of at most `width` characters, after `(`, `,` or spaces
/// where possible.
pub(crate) fn wrap(label: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut rest: Vec<char> = label.chars().collect();
    while rest.len() > width {
        let cut = rest[..width]
            .iter()
            .rposition(|c| matches!(c, '(' | ',' | ' '))
            .map(|i| i + 1)
            .filter(|&i| i > 1)
            .unwrap_or(width);
        lines.push(
            rest[..cut]
                .iter()
                .collect::<String>()
                .trim_end()
                .to_string(),
        );
        rest = rest[cut..].to_vec();
    }
    lines.push(rest.into_iter().collect());
    lines
}

/// Counts on axes: 500, 5000, 10k, 12.5k, 14.6k, 1.5M (three significant digits from 10k).
pub(crate) fn fmt_count(v: f64) -> String {
    let v = v.round();
    if v.abs() >= 1e6 {
        format!("{}M", sig3(v / 1e6))
    } else if v.abs() >= 1e4 {
        format!("{}k", sig3(v / 1e3))
    } else {
        format!("{}", v as i64)
    }
}

fn sig3(x: f64) -> String {
    let decimals = if x.abs() >= 100.0 {
        0
    } else if x.abs() >= 10.0 {
        1
    } else {
        2
    };
    let s = format!("{x:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// GiB with three significant digits: 0.993, 35.2, 352, 2109.
pub(crate) fn fmt_gib(g: f64) -> String {
    if g.abs() < 1.0 {
        let s = format!("{g:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        sig3(g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(fmt_count(500.0), "500");
        assert_eq!(fmt_count(5000.0), "5000");
        assert_eq!(fmt_count(12_500.0), "12.5k");
        assert_eq!(fmt_count(30_000.0), "30k");
        assert_eq!(fmt_count(1_500_000.0), "1.5M");
        assert_eq!(fmt_count(14_563.0), "14.6k");
        assert_eq!(fmt_count(145_600.0), "146k");
        assert_eq!(fmt_gib(0.9931640625), "0.993");
        assert_eq!(fmt_gib(35.15625), "35.2");
        assert_eq!(fmt_gib(1.0), "1");
        assert_eq!(fmt_gib(2109.375), "2109");
        assert_eq!(
            wrap("s3fifo(small_ratio=0.1,ghost=0.9)", 21),
            vec!["s3fifo(", "small_ratio=0.1,", "ghost=0.9)"]
        );
        assert_eq!(wrap("lru", 21), vec!["lru"]);
    }
}
