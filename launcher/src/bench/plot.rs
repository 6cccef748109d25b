//! Bandwidth-against-size charts as hand-written SVG.
//!
//! The chart is a few dozen lines, axes and labels, so plain text keeps the
//! binary free of a plotting library and its font dependencies. Sizes go on
//! a log2 axis (collective sizes grow by powers of two), bandwidths on a
//! log10 axis (they span orders of magnitude between 8 B and 64 MiB).

use std::fmt::Write as _;

/// One measured point: message size in bytes, bandwidth in GB/s, and the
/// text a viewer shows when hovering over it.
pub struct Point {
    pub bytes: f64,
    pub gbs: f64,
    pub tip: String,
}

pub struct Series {
    pub name: String,
    /// Drawn as the reference line: dark, dashed, hollow markers.
    pub baseline: bool,
    pub points: Vec<Point>,
    /// Small lines under the legend entry (what `auto` chose, size by size).
    pub notes: Vec<String>,
}

pub struct Panel {
    pub title: String,
    pub subtitle: String,
    pub series: Vec<Series>,
    /// Said across the plot area when no series has a point to draw.
    pub empty_note: String,
}

pub struct Figure {
    pub title: String,
    pub subtitle: String,
    pub x_label: String,
    pub y_label: String,
    pub panels: Vec<Panel>,
}

/// Okabe–Ito's colour-blind-safe colours and two of Paul Tol's, with the
/// light blue late so it rarely sits beside the dark blue of the first line.
const COLOURS: [&str; 9] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#882255", "#999933", "#56B4E9",
    "#44AA99",
];
const BASELINE_COLOUR: &str = "#222222";
const FONT: &str = "DejaVu Sans, Helvetica, Arial, sans-serif";

#[derive(Clone, Copy)]
enum Marker {
    Circle,
    Square,
    TriangleUp,
    Diamond,
    TriangleDown,
    Cross,
    Plus,
}

const MARKERS: [Marker; 7] = [
    Marker::Circle,
    Marker::Square,
    Marker::TriangleUp,
    Marker::Diamond,
    Marker::TriangleDown,
    Marker::Cross,
    Marker::Plus,
];

struct Style {
    colour: &'static str,
    marker: Marker,
    dashed: bool,
    hollow: bool,
}

// Geometry of one panel, in pixels.
const PLOT_W: f64 = 440.0;
const PLOT_H: f64 = 270.0;
const LEFT: f64 = 66.0;
const TOP: f64 = 44.0;
const BOTTOM: f64 = 50.0;
const GAP: f64 = 18.0;
const HEADER: f64 = 62.0;
const PAD: f64 = 14.0;
/// Rough advance of one character of the sans-serif font at 11 px (and at
/// 10 px); SVG cannot measure text, so the legend is sized from these.
const CHAR_W11: f64 = 7.0;
const CHAR_W10: f64 = 6.5;

/// Renders `fig` as a standalone SVG document.
pub fn render(fig: &Figure) -> String {
    let style = styler(fig);
    let points = || {
        fig.panels
            .iter()
            .flat_map(|p| &p.series)
            .flat_map(|s| &s.points)
    };
    let x_axis = LogAxis::bytes(points().map(|p| p.bytes).filter(|&b| b > 0.0));
    let y_axis = LogAxis::bandwidth(points().filter(|p| drawable(p)).map(|p| p.gbs));
    let plot = Plot {
        x: &x_axis,
        y: &y_axis,
    };

    let legend_w = legend_width(fig);
    let panel_w = LEFT + PLOT_W + GAP + legend_w;
    let panel_h = TOP + PLOT_H + BOTTOM;
    let cols = if fig.panels.len() > 1 { 2 } else { 1 };
    let rows = fig.panels.len().div_ceil(cols).max(1);
    let width = (PAD * 2.0 + panel_w * cols as f64).max(title_width(fig) + 2.0 * PAD);
    let height = HEADER + panel_h * rows as f64 + PAD;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="{FONT}">"#,
        w = width.ceil(),
        h = height.ceil()
    );
    let _ = writeln!(
        svg,
        r##"<rect width="100%" height="100%" fill="#ffffff"/>"##
    );
    let _ = writeln!(
        svg,
        r##"<text x="{x:.1}" y="26" font-size="17" font-weight="bold" fill="#111">{t}</text>"##,
        x = PAD,
        t = esc(&fig.title)
    );
    let _ = writeln!(
        svg,
        r##"<text x="{x:.1}" y="46" font-size="12" fill="#555">{t}</text>"##,
        x = PAD,
        t = esc(&fig.subtitle)
    );

    for (i, panel) in fig.panels.iter().enumerate() {
        let ox = PAD + (i % cols) as f64 * panel_w;
        let oy = HEADER + (i / cols) as f64 * panel_h;
        let _ = writeln!(
            svg,
            r#"<g class="panel" transform="translate({ox:.1},{oy:.1})">"#
        );
        draw_panel(&mut svg, fig, panel, &plot, legend_w, &style);
        svg.push_str("</g>\n");
    }
    svg.push_str("</svg>\n");
    svg
}

/// The same algorithm keeps its colour and marker in every panel.
fn styler(fig: &Figure) -> impl Fn(&Series) -> Style + '_ {
    let mut names: Vec<&str> = Vec::new();
    for s in fig.panels.iter().flat_map(|p| &p.series) {
        if !s.baseline && !names.contains(&s.name.as_str()) {
            names.push(&s.name);
        }
    }
    move |s: &Series| -> Style {
        if s.baseline {
            return Style {
                colour: BASELINE_COLOUR,
                marker: Marker::Circle,
                dashed: true,
                hollow: true,
            };
        }
        let i = names.iter().position(|n| *n == s.name).unwrap_or(0);
        Style {
            colour: COLOURS[i % COLOURS.len()],
            marker: MARKERS[i % MARKERS.len()],
            dashed: false,
            hollow: false,
        }
    }
}

/// Wide enough for the longest series name or note in any panel, so every
/// panel's legend has the same width and the panels line up.
fn legend_width(fig: &Figure) -> f64 {
    fig.panels
        .iter()
        .flat_map(|p| &p.series)
        .flat_map(|s| {
            std::iter::once(s.name.chars().count() as f64 * CHAR_W11 + 36.0).chain(
                s.notes
                    .iter()
                    .map(|n| n.chars().count() as f64 * CHAR_W10 + 36.0),
            )
        })
        .fold(110.0, f64::max)
}

fn title_width(fig: &Figure) -> f64 {
    let t = fig.title.chars().count() as f64 * 10.5;
    let s = fig.subtitle.chars().count() as f64 * 6.6;
    t.max(s)
}

/// Where one panel's plot area puts a value, in the panel's pixels.
struct Plot<'a> {
    x: &'a LogAxis,
    y: &'a LogAxis,
}

// Corners of the plot area within a panel.
const X0: f64 = LEFT;
const Y0: f64 = TOP;
const X1: f64 = LEFT + PLOT_W;
const Y1: f64 = TOP + PLOT_H;

impl Plot<'_> {
    fn px(&self, v: f64) -> f64 {
        X0 + self.x.frac(v) * PLOT_W
    }

    fn py(&self, v: f64) -> f64 {
        Y1 - self.y.frac(v) * PLOT_H
    }
}

impl Style {
    fn dash(&self) -> &'static str {
        if self.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        }
    }
}

fn draw_panel(
    svg: &mut String,
    fig: &Figure,
    panel: &Panel,
    plot: &Plot,
    legend_w: f64,
    style: &dyn Fn(&Series) -> Style,
) {
    heading(svg, panel);
    bandwidth_grid(svg, plot);
    size_grid(svg, plot);
    frame(svg, fig);
    series_lines(svg, panel, plot, style);
    if !panel.series.iter().flat_map(|s| &s.points).any(drawable) {
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" font-size="13" fill="#888" text-anchor="middle">{}</text>"##,
            X0 + PLOT_W / 2.0,
            Y0 + PLOT_H / 2.0,
            esc(&panel.empty_note)
        );
    }
    legend(svg, panel, legend_w, style);
}

fn heading(svg: &mut String, panel: &Panel) {
    let _ = writeln!(
        svg,
        r##"<text x="{X0:.1}" y="22" font-size="14" font-weight="bold" fill="#111">{t}</text><text x="{X1:.1}" y="22" font-size="11" fill="#666" text-anchor="end">{s}</text>"##,
        t = esc(&panel.title),
        s = esc(&panel.subtitle)
    );
}

/// Major grid lines darker than minor ones: (stroke, width).
fn grid_stroke(major: bool) -> (&'static str, f64) {
    if major {
        ("#d0d0d0", 1.0)
    } else {
        ("#ececec", 0.8)
    }
}

/// Horizontal grid lines, labelled on the left.
fn bandwidth_grid(svg: &mut String, plot: &Plot) {
    for &(v, major) in &plot.y.ticks {
        let yy = plot.py(v);
        let (stroke, w) = grid_stroke(major);
        let _ = writeln!(
            svg,
            r#"<line x1="{X0:.1}" y1="{yy:.1}" x2="{X1:.1}" y2="{yy:.1}" stroke="{stroke}" stroke-width="{w}"/>"#
        );
        if major || plot.y.label_minor {
            let _ = writeln!(
                svg,
                r##"<text x="{:.1}" y="{:.1}" font-size="11" fill="#333" text-anchor="end">{}</text>"##,
                X0 - 6.0,
                yy + 4.0,
                gbs_label(v)
            );
        }
    }
}

/// Vertical grid lines; the major ones get a tick mark and a label below.
fn size_grid(svg: &mut String, plot: &Plot) {
    for &(v, major) in &plot.x.ticks {
        let xx = plot.px(v);
        let (stroke, w) = grid_stroke(major);
        let _ = writeln!(
            svg,
            r#"<line x1="{xx:.1}" y1="{Y0:.1}" x2="{xx:.1}" y2="{Y1:.1}" stroke="{stroke}" stroke-width="{w}"/>"#
        );
        if major {
            let _ = writeln!(
                svg,
                r##"<line x1="{xx:.1}" y1="{Y1:.1}" x2="{xx:.1}" y2="{:.1}" stroke="#555"/><text x="{xx:.1}" y="{:.1}" font-size="11" fill="#333" text-anchor="middle">{}</text>"##,
                Y1 + 4.0,
                Y1 + 17.0,
                bytes_label(v)
            );
        }
    }
}

/// The border of the plot area and the two axis titles.
fn frame(svg: &mut String, fig: &Figure) {
    let _ = writeln!(
        svg,
        r##"<rect x="{X0:.1}" y="{Y0:.1}" width="{PLOT_W}" height="{PLOT_H}" fill="none" stroke="#555"/>"##
    );
    let _ = writeln!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" font-size="12" fill="#222" text-anchor="middle">{}</text>"##,
        X0 + PLOT_W / 2.0,
        Y1 + 38.0,
        esc(&fig.x_label)
    );
    let (lx, ly) = (16.0, Y0 + PLOT_H / 2.0);
    let _ = writeln!(
        svg,
        r##"<text x="{lx:.1}" y="{ly:.1}" font-size="12" fill="#222" text-anchor="middle" transform="rotate(-90 {lx:.1} {ly:.1})">{}</text>"##,
        esc(&fig.y_label)
    );
}

/// One line per series, with a marker carrying its tooltip at each point.
fn series_lines(svg: &mut String, panel: &Panel, plot: &Plot, style: &dyn Fn(&Series) -> Style) {
    // Baselines first, so our lines are drawn over them where they coincide.
    let mut order: Vec<&Series> = panel.series.iter().collect();
    order.sort_by_key(|s| !s.baseline);
    for s in &order {
        let st = style(s);
        let pts: Vec<&Point> = s.points.iter().filter(|p| drawable(p)).collect();
        let coords: Vec<String> = pts
            .iter()
            .map(|p| format!("{:.1},{:.1}", plot.px(p.bytes), plot.py(p.gbs)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline data-series="{}" points="{}" fill="none" stroke="{}" stroke-width="2" stroke-linejoin="round"{}/>"#,
            esc(&s.name),
            coords.join(" "),
            st.colour,
            st.dash()
        );
        for p in &pts {
            let _ = write!(svg, "<g><title>{}</title>", esc(&p.tip));
            marker(svg, &st, plot.px(p.bytes), plot.py(p.gbs));
            svg.push_str("</g>\n");
        }
    }
}

/// Legend, to the right of the plot so it never hides a line.
fn legend(svg: &mut String, panel: &Panel, legend_w: f64, style: &dyn Fn(&Series) -> Style) {
    let lx = X1 + GAP;
    let _ = writeln!(
        svg,
        r##"<rect x="{lx:.1}" y="{Y0:.1}" width="{:.1}" height="{:.1}" fill="#fafafa" stroke="#ddd"/>"##,
        legend_w - 4.0,
        legend_height(panel)
    );
    let mut ly = Y0 + 18.0;
    for s in &panel.series {
        let st = style(s);
        let _ = writeln!(
            svg,
            r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{}" stroke-width="2"{}/>"#,
            lx + 8.0,
            lx + 30.0,
            st.colour,
            st.dash()
        );
        marker(svg, &st, lx + 19.0, ly);
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" font-size="11" fill="#111">{}</text>"##,
            lx + 36.0,
            ly + 4.0,
            esc(&s.name)
        );
        ly += 18.0;
        for n in &s.notes {
            let _ = writeln!(
                svg,
                r##"<text x="{:.1}" y="{:.1}" font-size="10" fill="#666">{}</text>"##,
                lx + 36.0,
                ly,
                esc(n)
            );
            ly += 13.0;
        }
    }
}

/// A log axis has no place for zero: a bandwidth of 0 (one rank moves no
/// bytes) or a failed measurement leaves a gap instead.
fn drawable(p: &Point) -> bool {
    p.bytes > 0.0 && p.gbs > 0.0 && p.gbs.is_finite()
}

fn legend_height(panel: &Panel) -> f64 {
    let notes: usize = panel.series.iter().map(|s| s.notes.len()).sum();
    10.0 + 18.0 * panel.series.len() as f64 + 13.0 * notes as f64
}

fn marker(svg: &mut String, st: &Style, x: f64, y: f64) {
    let r = 4.0;
    let (fill, stroke) = if st.hollow {
        ("#ffffff", st.colour)
    } else {
        (st.colour, "#ffffff")
    };
    let paint = format!(r#"fill="{fill}" stroke="{stroke}" stroke-width="1.2""#);
    let _ = match st.marker {
        Marker::Circle => write!(svg, r#"<circle cx="{x:.1}" cy="{y:.1}" r="{r}" {paint}/>"#),
        Marker::Square => write!(
            svg,
            r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" {paint}/>"#,
            x - r * 0.9,
            y - r * 0.9,
            r * 1.8,
            r * 1.8
        ),
        Marker::TriangleUp => write!(
            svg,
            r#"<path d="M{x:.1},{:.1}L{:.1},{:.1}L{:.1},{:.1}Z" {paint}/>"#,
            y - r * 1.2,
            x + r * 1.1,
            y + r * 0.8,
            x - r * 1.1,
            y + r * 0.8
        ),
        Marker::TriangleDown => write!(
            svg,
            r#"<path d="M{x:.1},{:.1}L{:.1},{:.1}L{:.1},{:.1}Z" {paint}/>"#,
            y + r * 1.2,
            x + r * 1.1,
            y - r * 0.8,
            x - r * 1.1,
            y - r * 0.8
        ),
        Marker::Diamond => write!(
            svg,
            r#"<path d="M{x:.1},{:.1}L{:.1},{y:.1}L{x:.1},{:.1}L{:.1},{y:.1}Z" {paint}/>"#,
            y - r * 1.3,
            x + r * 1.1,
            y + r * 1.3,
            x - r * 1.1
        ),
        // Open strokes: drawn in the series' colour, thicker than the line.
        Marker::Cross => write!(
            svg,
            r#"<path d="M{:.1},{:.1}L{:.1},{:.1}M{:.1},{:.1}L{:.1},{:.1}" stroke="{}" stroke-width="2.4"/>"#,
            x - r,
            y - r,
            x + r,
            y + r,
            x - r,
            y + r,
            x + r,
            y - r,
            st.colour
        ),
        Marker::Plus => write!(
            svg,
            r#"<path d="M{:.1},{y:.1}L{:.1},{y:.1}M{x:.1},{:.1}L{x:.1},{:.1}" stroke="{}" stroke-width="2.4"/>"#,
            x - r * 1.2,
            x + r * 1.2,
            y - r * 1.2,
            y + r * 1.2,
            st.colour
        ),
    };
}

/// A logarithmic axis: its range and its ticks (value, labelled major tick).
struct LogAxis {
    lo: f64,
    hi: f64,
    ticks: Vec<(f64, bool)>,
    /// Whether the minor ticks carry labels too (short ranges, few majors).
    label_minor: bool,
}

impl LogAxis {
    fn frac(&self, v: f64) -> f64 {
        (v.ln() - self.lo.ln()) / (self.hi.ln() - self.lo.ln())
    }

    /// Powers of two, labelled every 1, 2, 4... of them so at most ten
    /// labels fit, and in step with the smallest size measured.
    fn bytes(values: impl Iterator<Item = f64>) -> LogAxis {
        let (mut lo, mut hi) = min_max(values).unwrap_or((1024.0, 1024.0 * 1024.0));
        if lo == hi {
            lo /= 4.0;
            hi *= 4.0;
        }
        let first = lo.log2();
        let span = hi.log2() - first;
        let pad = (span * 0.04).max(0.3);
        let (lo_e, hi_e) = (first - pad, hi.log2() + pad);
        let exps: Vec<i32> = (lo_e.ceil() as i32..=hi_e.floor() as i32).collect();
        let mut step = 1;
        while exps.len().div_ceil(step) > 10 {
            step *= 2;
        }
        let phase = first.round() as i32;
        let ticks = exps
            .iter()
            .map(|&e| (2f64.powi(e), (e - phase).rem_euclid(step as i32) == 0))
            .collect();
        LogAxis {
            lo: 2f64.powf(lo_e),
            hi: 2f64.powf(hi_e),
            ticks,
            label_minor: false,
        }
    }

    /// Bounds on the 1-2-5 series around the data; decades labelled, and
    /// the 2s and 5s as well when the range is short.
    fn bandwidth(values: impl Iterator<Item = f64>) -> LogAxis {
        let (mut lo, mut hi) = min_max(values).unwrap_or((0.1, 10.0));
        if hi / lo < 2.0 {
            lo /= 2.0;
            hi *= 2.0;
        }
        let nice_below = |v: f64| {
            let d = 10f64.powf(v.log10().floor());
            [5.0, 2.0, 1.0]
                .into_iter()
                .map(|m| m * d)
                .find(|&n| n <= v * (1.0 + 1e-9))
                .unwrap_or(d)
        };
        let nice_above = |v: f64| {
            let d = 10f64.powf(v.log10().floor());
            [1.0, 2.0, 5.0, 10.0]
                .into_iter()
                .map(|m| m * d)
                .find(|&n| n >= v * (1.0 - 1e-9))
                .unwrap_or(10.0 * d)
        };
        let (lo, hi) = (nice_below(lo), nice_above(hi));
        let mut ticks = Vec::new();
        let mut d = 10f64.powf(lo.log10().floor());
        while d <= hi * (1.0 + 1e-9) {
            for m in [1.0, 2.0, 5.0] {
                let v = m * d;
                if v >= lo * (1.0 - 1e-9) && v <= hi * (1.0 + 1e-9) {
                    ticks.push((v, m == 1.0));
                }
            }
            d *= 10.0;
        }
        let label_minor = hi / lo <= 1000.0 * (1.0 + 1e-9);
        LogAxis {
            lo,
            hi,
            ticks,
            label_minor,
        }
    }
}

fn min_max(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((a, b)) => Some((a.min(v), b.max(v))),
    })
}

/// `1024` as `1K`, `3 << 20` as `3M`: the spelling `-b` and `-e` accept.
pub fn bytes_label(v: f64) -> String {
    let b = v.round() as u64;
    for (shift, unit) in [(30, "G"), (20, "M"), (10, "K")] {
        if b >= 1 << shift && b.is_multiple_of(1 << shift) {
            return format!("{}{unit}", b >> shift);
        }
    }
    if b >= 1 << 10 {
        return format!("{:.1}K", v / 1024.0);
    }
    b.to_string()
}

fn gbs_label(v: f64) -> String {
    if v >= 1.0 {
        format!("{v:.0}")
    } else {
        // Enough decimals for the one significant digit of a 1-2-5 tick.
        let places = (-v.log10()).ceil() as usize;
        format!("{v:.places$}")
    }
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, baseline: bool, pts: &[(f64, f64)]) -> Series {
        Series {
            name: name.into(),
            baseline,
            points: pts
                .iter()
                .map(|&(bytes, gbs)| Point {
                    bytes,
                    gbs,
                    tip: format!("{name} <{bytes}>"),
                })
                .collect(),
            notes: vec![],
        }
    }

    fn figure(panels: Vec<Panel>) -> Figure {
        Figure {
            title: "2 ranks & f32".into(),
            subtitle: String::new(),
            x_label: "bytes".into(),
            y_label: "GB/s".into(),
            panels,
        }
    }

    #[test]
    fn byte_labels_use_the_suffixes_the_cli_accepts() {
        assert_eq!(bytes_label(8.0), "8");
        assert_eq!(bytes_label(512.0), "512");
        assert_eq!(bytes_label(1024.0), "1K");
        assert_eq!(bytes_label(256.0 * 1024.0), "256K");
        assert_eq!(bytes_label(64.0 * 1024.0 * 1024.0), "64M");
        assert_eq!(bytes_label(2f64.powi(31)), "2G");
        assert_eq!(bytes_label(1536.0), "1.5K");
    }

    #[test]
    fn size_ticks_cover_the_range_with_at_most_ten_labels() {
        let sizes = (0..9).map(|i| 1024.0 * 4f64.powi(i));
        let axis = LogAxis::bytes(sizes);
        let labels: Vec<String> = axis
            .ticks
            .iter()
            .filter(|t| t.1)
            .map(|t| bytes_label(t.0))
            .collect();
        assert_eq!(
            labels,
            ["1K", "4K", "16K", "64K", "256K", "1M", "4M", "16M", "64M"]
        );
        assert!(axis.frac(1024.0) > 0.0 && axis.frac(64.0 * 1024.0 * 1024.0) < 1.0);
    }

    #[test]
    fn bandwidth_axis_ends_on_1_2_5_values_around_the_data() {
        let axis = LogAxis::bandwidth([0.42, 13.2].into_iter());
        assert!((axis.lo - 0.2).abs() < 1e-12 && (axis.hi - 20.0).abs() < 1e-9);
        let labels: Vec<String> = axis.ticks.iter().map(|t| gbs_label(t.0)).collect();
        assert_eq!(labels, ["0.2", "0.5", "1", "2", "5", "10", "20"]);
    }

    #[test]
    fn one_polyline_per_series_and_text_escaped() {
        let fig = figure(vec![
            Panel {
                title: "allreduce".into(),
                subtitle: String::new(),
                series: vec![
                    series("auto", false, &[(1024.0, 1.0), (4096.0, 2.0)]),
                    series("ring", false, &[(1024.0, 0.5), (4096.0, 3.0)]),
                    series("MPI", true, &[(1024.0, 0.8), (4096.0, 2.5)]),
                ],
                empty_note: String::new(),
            },
            Panel {
                title: "broadcast".into(),
                subtitle: String::new(),
                series: vec![
                    series("auto", false, &[(1024.0, 1.5)]),
                    series("MPI", true, &[(1024.0, 1.2)]),
                ],
                empty_note: String::new(),
            },
        ]);
        let svg = render(&fig);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 5);
        assert!(svg.contains("2 ranks &amp; f32") && svg.contains("auto &lt;1024&gt;"));
        // `auto` keeps its colour in both panels; MPI has the baseline's.
        let auto_lines: Vec<&str> = svg
            .lines()
            .filter(|l| l.contains(r#"data-series="auto""#))
            .collect();
        assert_eq!(auto_lines.len(), 2);
        assert!(auto_lines.iter().all(|l| l.contains(COLOURS[0])));
        assert!(svg
            .lines()
            .filter(|l| l.contains(r#"data-series="MPI""#))
            .all(|l| l.contains(BASELINE_COLOUR) && l.contains("stroke-dasharray")));
    }

    #[test]
    fn a_panel_without_drawable_points_says_why() {
        let fig = figure(vec![Panel {
            title: "allgather".into(),
            subtitle: String::new(),
            series: vec![
                series("auto", false, &[]),
                series("ring", false, &[(1024.0, 0.0), (4096.0, f64::INFINITY)]),
            ],
            empty_note: "nothing moved".into(),
        }]);
        let svg = render(&fig);
        assert!(svg.contains(">nothing moved<"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        // The size axis still spans the sizes measured.
        assert!(svg.contains(">1K<") && svg.contains(">4K<"));
    }

    /// Every element the renderer draws: two rows of panels, all markers and
    /// more algorithms than colours, notes under legend entries, gaps in a
    /// line, a panel with nothing to draw, a bandwidth range of decades.
    fn busy_figure() -> Figure {
        let names = [
            "auto",
            "ring",
            "tree",
            "rabenseifner",
            "direct",
            "pipeline",
            "bruck",
            "hier",
        ];
        let all: Vec<Series> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let pts: Vec<(f64, f64)> = (0..12)
                    .map(|k| {
                        let bytes = 8.0 * 4f64.powi(k);
                        let gbs = match (i, k) {
                            (1, 3) => 0.0,
                            (2, 5) => f64::NAN,
                            _ => 0.004 * 1.9f64.powi(k) * (1.0 + i as f64 / 7.0),
                        };
                        (bytes, gbs)
                    })
                    .collect();
                let mut s = series(name, false, &pts);
                if i % 3 == 0 {
                    s.notes = vec![format!("8 B–1K: {name}"), "4K and up: ring".into()];
                }
                s
            })
            .collect();
        let mut first = all;
        first.push(series(
            "MPI_Allreduce",
            true,
            &[(8.0, 0.003), (1024.0, 0.2), (4f64.powi(11) * 8.0, 12.0)],
        ));
        Figure {
            title: "4 ranks on 1 node, f32 \"sum\"".into(),
            subtitle: "median of 20 runs; <higher> is better".into(),
            x_label: "message size (bytes)".into(),
            y_label: "bandwidth (GB/s)".into(),
            panels: vec![
                Panel {
                    title: "allreduce".into(),
                    subtitle: "algbw".into(),
                    series: first,
                    empty_note: String::new(),
                },
                Panel {
                    title: "broadcast".into(),
                    subtitle: "root 0".into(),
                    series: vec![
                        series(
                            "auto",
                            false,
                            &[(8.0, 0.01), (2048.0, 0.9), (3.0 * 1048576.0, 7.5)],
                        ),
                        series(
                            "MPI_Bcast",
                            true,
                            &[(8.0, 0.02), (2048.0, 1.1), (3.0 * 1048576.0, 6.0)],
                        ),
                    ],
                    empty_note: String::new(),
                },
                Panel {
                    title: "allgather".into(),
                    subtitle: String::new(),
                    series: vec![series("ring", false, &[(1024.0, 0.0)])],
                    empty_note: "one rank: nothing moved".into(),
                },
            ],
        }
    }

    /// One panel over a short bandwidth range, where the 2s and 5s are
    /// labelled too.
    fn narrow_figure() -> Figure {
        figure(vec![Panel {
            title: "reduce".into(),
            subtitle: "root 1".into(),
            series: vec![
                series(
                    "auto",
                    false,
                    &[(4096.0, 1.3), (16384.0, 2.9), (65536.0, 4.1)],
                ),
                series(
                    "MPI_Reduce",
                    true,
                    &[(4096.0, 1.1), (16384.0, 3.4), (65536.0, 3.9)],
                ),
            ],
            empty_note: String::new(),
        }])
    }

    /// The drawing is pinned to SVG written before the renderer was split
    /// into steps: a change to the output shows here as the first line that
    /// differs, not as a chart that quietly looks different.
    #[test]
    fn rendering_matches_the_recorded_svg() {
        for (fig, want, file) in [
            (busy_figure(), include_str!("testdata/busy.svg"), "busy.svg"),
            (
                narrow_figure(),
                include_str!("testdata/narrow.svg"),
                "narrow.svg",
            ),
        ] {
            let got = render(&fig);
            if let Some((i, (g, w))) = got
                .lines()
                .zip(want.lines())
                .enumerate()
                .find(|(_, (g, w))| g != w)
            {
                panic!("{file} line {}:\n got: {g}\nwant: {w}", i + 1);
            }
            assert_eq!(got, want, "{file}: same lines, different length");
        }
    }
}
