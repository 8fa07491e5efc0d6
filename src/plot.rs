//! Small PNG chart library for rnnlab's experiment reports.
//!
//! It draws the handful of chart types the experiments need — line charts (optionally with a
//! log-scaled y axis, horizontal and vertical reference lines), mean lines with a shaded spread
//! band, heatmaps with a colour bar, and line charts side by side — straight to PNG files. Text is rendered with DejaVu Sans embedded in
//! the binary (via the `dejavu` crate and plotters' `ab_glyph` feature), so charts look the same on
//! every machine and no system fonts, fontconfig or freetype are needed. Defaults aim at charts
//! that are readable on a laptop screen and explain themselves: large fonts, thick lines, a
//! colour-blind-friendly palette (Okabe–Ito), an optional subtitle, a legend that avoids the data,
//! and a footnote whenever data points had to be left out.
//!
//! What it deliberately does not do: it is not a general plotting library (no scatter plots,
//! histograms, SVG output, themes or interactive output), it does not smooth, resample or aggregate
//! data, and it never clamps invalid values onto a log axis — zeros, negative numbers, NaN and
//! infinities are left out of the line (which gets a gap there) and counted in a footnote. It does
//! not create directories or temporary files: each function renders the whole image in memory and
//! then writes exactly the path it is given.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow, bail, ensure};
use plotters::backend::{BitMapBackend, DrawingBackend};
use plotters::chart::{ChartBuilder, ChartContext, LabelAreaPosition, SeriesLabelPosition};
use plotters::coord::Shift;
use plotters::coord::cartesian::Cartesian2d;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::drawing::{DrawingArea, IntoDrawingArea};
use plotters::element::{Circle, EmptyElement, PathElement, Polygon, Rectangle};
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{
    Color as _, FontDesc, FontFamily, FontStyle, RGBColor, ShapeStyle, TextStyle, register_font,
};

/// Default image size in pixels (width, height) of [`line_chart`], [`band_chart`] and
/// [`heatmap`].
pub const DEFAULT_SIZE: (u32, u32) = (1100, 700);

/// Image size in pixels (width, height) of [`two_panel_line_chart`].
pub const TWO_PANEL_SIZE: (u32, u32) = (1600, 700);

/// Series with at most this many plottable points get a marker at every point, so that
/// sparse data does not masquerade as a smooth curve.
pub const MAX_POINTS_WITH_MARKERS: usize = 40;

const TITLE_PX: f64 = 28.0;
const SUBTITLE_PX: f64 = 18.0;
const AXIS_LABEL_PX: f64 = 20.0;
const TICK_LABEL_PX: f64 = 16.0;
const LEGEND_PX: f64 = 18.0;
const NOTE_PX: f64 = 15.0;
const LINE_WIDTH: u32 = 3;
const THIN_LINE_WIDTH: u32 = 1;
const REF_LINE_WIDTH: u32 = 2;
const MARKER_RADIUS: i32 = 4;
const BAND_MARKER_RADIUS: i32 = 5;
const ISOLATED_DOT_RADIUS: i32 = 2;
const DASH: i32 = 12;
const DASH_GAP: i32 = 8;
const COLORBAR_WIDTH: u32 = 28;
const COLORBAR_GAP: u32 = 24;
const WHITE: RGBColor = RGBColor(255, 255, 255);
const INK: RGBColor = RGBColor(20, 20, 20);
const MUTED_INK: RGBColor = RGBColor(90, 90, 90);
const NO_DATA_GREY: RGBColor = RGBColor(160, 160, 160);

// ---------------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------------

/// An RGB colour. The associated constants are the Okabe–Ito colour-blind-friendly palette;
/// [`palette`] cycles through them in a good order for lines on white.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Color {
    /// Red channel.
    pub r: u8,
    /// Green channel.
    pub g: u8,
    /// Blue channel.
    pub b: u8,
}

impl Color {
    /// Okabe–Ito blue.
    pub const BLUE: Color = Color::rgb(0, 114, 178);
    /// Okabe–Ito vermillion (a red-orange).
    pub const VERMILLION: Color = Color::rgb(213, 94, 0);
    /// Okabe–Ito bluish green.
    pub const GREEN: Color = Color::rgb(0, 158, 115);
    /// Okabe–Ito reddish purple.
    pub const PURPLE: Color = Color::rgb(204, 121, 167);
    /// Okabe–Ito orange.
    pub const ORANGE: Color = Color::rgb(230, 159, 0);
    /// Okabe–Ito sky blue.
    pub const SKY_BLUE: Color = Color::rgb(86, 180, 233);
    /// Near-black, for reference lines and bounds.
    pub const BLACK: Color = Color::rgb(20, 20, 20);
    /// Mid grey, for de-emphasised reference lines such as chance level.
    pub const GREY: Color = Color::rgb(110, 110, 110);

    /// A colour from its red, green and blue channels.
    #[must_use]
    pub const fn rgb(r: u8, g: u8, b: u8) -> Color {
        Color { r, g, b }
    }

    fn to_plotters(self) -> RGBColor {
        RGBColor(self.r, self.g, self.b)
    }
}

const PALETTE: [Color; 7] = [
    Color::BLUE,
    Color::VERMILLION,
    Color::GREEN,
    Color::PURPLE,
    Color::ORANGE,
    Color::SKY_BLUE,
    Color::BLACK,
];

/// The `i`-th colour of a fixed colour-blind-friendly palette (Okabe–Ito without yellow,
/// which is unreadable on white). Wraps around after 7 colours.
#[must_use]
pub fn palette(i: usize) -> Color {
    PALETTE[i % PALETTE.len()]
}

/// Where the legend box goes inside the plot area.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LegendPos {
    /// The position (of the other eight) where the legend covers the fewest data; corners win
    /// ties, in the order listed here.
    #[default]
    Auto,
    /// Upper right corner.
    UpperRight,
    /// Upper left corner.
    UpperLeft,
    /// Lower right corner.
    LowerRight,
    /// Lower left corner.
    LowerLeft,
    /// Right edge, vertically centred.
    MiddleRight,
    /// Left edge, vertically centred.
    MiddleLeft,
    /// Top edge, horizontally centred.
    UpperCenter,
    /// Bottom edge, horizontally centred.
    LowerCenter,
    /// No legend at all.
    Hidden,
}

impl LegendPos {
    /// Horizontal and vertical placement as fractions: 0 = left/top, 1 = right/bottom.
    fn anchor(self) -> (f64, f64) {
        match self {
            LegendPos::UpperLeft => (0.0, 0.0),
            LegendPos::LowerLeft => (0.0, 1.0),
            LegendPos::LowerRight => (1.0, 1.0),
            LegendPos::MiddleRight => (1.0, 0.5),
            LegendPos::MiddleLeft => (0.0, 0.5),
            LegendPos::UpperCenter => (0.5, 0.0),
            LegendPos::LowerCenter => (0.5, 1.0),
            LegendPos::UpperRight | LegendPos::Auto | LegendPos::Hidden => (1.0, 0.0),
        }
    }
}

/// One line of a [`LineChart`].
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend text. An empty label keeps the series out of the legend.
    pub label: String,
    /// Data points `(x, y)`, drawn in the given order. Points that cannot be shown (non-finite,
    /// or `y <= 0` on a log axis) leave a gap in the line and are counted in a footnote.
    pub points: Vec<(f64, f64)>,
    /// Line colour.
    pub color: Color,
    /// Draw the line dashed (e.g. for theoretical bounds).
    pub dashed: bool,
    /// Draw a thin line (for long, noisy per-step data where thick lines merge into a band).
    pub thin: bool,
}

impl Series {
    /// A solid line.
    #[must_use]
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>, color: Color) -> Series {
        Series {
            label: label.into(),
            points,
            color,
            dashed: false,
            thin: false,
        }
    }

    /// The same series, drawn dashed.
    #[must_use]
    pub fn dashed(mut self) -> Series {
        self.dashed = true;
        self
    }

    /// The same series, drawn with a thin line.
    #[must_use]
    pub fn thin(mut self) -> Series {
        self.thin = true;
        self
    }
}

/// A horizontal reference line across the whole plot, e.g. "baseline MSE 0.167" or
/// "chance 1/8". It appears in the legend when its label is not empty.
#[derive(Clone, Debug, PartialEq)]
pub struct HLine {
    /// Legend text.
    pub label: String,
    /// Height of the line in data units.
    pub y: f64,
    /// Draw the line dashed.
    pub dashed: bool,
    /// Line colour.
    pub color: Color,
}

impl HLine {
    /// A dashed reference line (the usual look for baselines and chance levels).
    #[must_use]
    pub fn new(label: impl Into<String>, y: f64, color: Color) -> HLine {
        HLine {
            label: label.into(),
            y,
            dashed: true,
            color,
        }
    }
}

/// A vertical reference line from the bottom to the top of the plot, e.g. "diverged at step
/// 412". It appears in the legend when its label is not empty.
#[derive(Clone, Debug, PartialEq)]
pub struct VLine {
    /// Legend text.
    pub label: String,
    /// Position of the line in data units.
    pub x: f64,
    /// Draw the line dashed.
    pub dashed: bool,
    /// Line colour.
    pub color: Color,
}

impl VLine {
    /// A dashed vertical reference line.
    #[must_use]
    pub fn new(label: impl Into<String>, x: f64, color: Color) -> VLine {
        VLine {
            label: label.into(),
            x,
            dashed: true,
            color,
        }
    }
}

/// A line chart; see [`line_chart`], [`two_panel_line_chart`] and [`panel_line_chart`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LineChart {
    /// Title, drawn bold at the top (shrunk if it would not fit).
    pub title: String,
    /// Optional smaller text under the title; `\n` starts a new line.
    pub subtitle: Option<String>,
    /// X axis description.
    pub x_label: String,
    /// Y axis description.
    pub y_label: String,
    /// Logarithmic (base 10) y axis.
    pub log_y: bool,
    /// The lines.
    pub series: Vec<Series>,
    /// Horizontal reference lines.
    pub hlines: Vec<HLine>,
    /// Vertical reference lines (their positions count as data for the x range).
    pub vlines: Vec<VLine>,
    /// Fixed x range; by default the data range.
    pub x_range: Option<(f64, f64)>,
    /// Fixed y range; by default the data range (including reference lines) plus a margin.
    /// Must be positive on a log axis.
    pub y_range: Option<(f64, f64)>,
    /// Legend placement.
    pub legend: LegendPos,
}

/// One mean line with a shaded spread band for a [`BandChart`].
#[derive(Clone, Debug, PartialEq)]
pub struct Band {
    /// Legend text. An empty label keeps the band out of the legend.
    pub label: String,
    /// Colour of the line, the markers and (lightened) the band.
    pub color: Color,
    /// Points `(x, mean, lo, hi)`, e.g. mean and min..max over seeds. They are sorted by x;
    /// points with a non-finite value (or `x <= 0` on a log x axis) are left out and counted
    /// in a footnote.
    pub points: Vec<(f64, f64, f64, f64)>,
}

/// Mean lines with shaded spread bands and a marker at every point; see [`band_chart`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BandChart {
    /// Title, drawn bold at the top.
    pub title: String,
    /// Optional smaller text under the title; `\n` starts a new line.
    pub subtitle: Option<String>,
    /// X axis description.
    pub x_label: String,
    /// Y axis description.
    pub y_label: String,
    /// Logarithmic (base 10) x axis. With at most 12 distinct x values the ticks are placed
    /// at the data's x values.
    pub log_x: bool,
    /// The bands.
    pub bands: Vec<Band>,
    /// Horizontal reference lines (e.g. chance level).
    pub hlines: Vec<HLine>,
    /// Fixed y range, e.g. `(0.0, 1.0)` for accuracies; by default the data range plus a margin.
    pub y_range: Option<(f64, f64)>,
    /// Legend placement.
    pub legend: LegendPos,
}

/// A grid of values drawn as coloured cells with a colour bar; see [`heatmap`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Heatmap {
    /// Title, drawn bold at the top.
    pub title: String,
    /// Optional smaller text under the title; `\n` starts a new line.
    pub subtitle: Option<String>,
    /// X axis description.
    pub x_label: String,
    /// Y axis description.
    pub y_label: String,
    /// Description of the values, written along the colour bar.
    pub colorbar_label: String,
    /// Column coordinates (e.g. timestep), strictly increasing or strictly decreasing.
    pub x_values: Vec<f64>,
    /// Row coordinates (e.g. training step), strictly increasing or strictly decreasing.
    /// Larger values are drawn higher up.
    pub y_values: Vec<f64>,
    /// `values[row][col]`, e.g. log10 of a gradient norm. NaN and infinities mean "no data" and
    /// are drawn grey.
    pub values: Vec<Vec<f64>>,
    /// Fixed colour scale `(min, max)`, e.g. to compare two heatmaps; by default the range of
    /// the finite values. Values outside it get the end colours (the footnote says so).
    pub value_range: Option<(f64, f64)>,
}

// ---------------------------------------------------------------------------------------------
// Public functions
// ---------------------------------------------------------------------------------------------

/// Registers the embedded DejaVu Sans (regular and bold) as plotters' `"sans-serif"` font.
///
/// Every chart function calls this itself; it only does work the first time and is safe to call
/// from several threads.
///
/// # Errors
///
/// If the embedded font data cannot be parsed (which would be a packaging bug).
pub fn register_fonts() -> Result<()> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
                .map_err(|_| "DejaVu Sans regular".to_string())?;
            register_font("sans-serif", FontStyle::Bold, dejavu::sans::bold())
                .map_err(|_| "DejaVu Sans bold".to_string())?;
            Ok(())
        })
        .clone()
        .map_err(|font| anyhow!("could not register the embedded font {font}"))
}

/// Draws a line chart to the PNG file `path` ([`DEFAULT_SIZE`]).
///
/// Series whose points are all unplottable (e.g. all zero on a log axis) still give a chart,
/// with a footnote saying so.
///
/// # Errors
///
/// Without writing anything: if the chart has no series and no reference lines, if a given
/// range is invalid (not finite, not increasing, or not positive on a log axis), or if `path`
/// does not end in `.png`. Also if the file cannot be written.
pub fn line_chart(path: &Path, chart: &LineChart) -> Result<()> {
    let what = || format!("line chart {:?} -> {}", chart.title, path.display());
    let prepared = prepare_line_chart(chart, None).with_context(what)?;
    render_png(path, DEFAULT_SIZE, |root| {
        draw_line_chart(root, chart, &prepared)
    })
    .with_context(what)
}

/// Draws two line charts side by side into one PNG file ([`TWO_PANEL_SIZE`]), e.g. "at
/// initialisation" | "after training".
///
/// Side-by-side panels invite comparison, so when both panels have the same kind of y axis and
/// neither sets `y_range`, they share one y range covering both.
///
/// # Errors
///
/// As [`line_chart`], for either panel.
pub fn two_panel_line_chart(path: &Path, left: &LineChart, right: &LineChart) -> Result<()> {
    panel_line_chart(path, &[left.clone(), right.clone()])
}

/// Draws line charts side by side in one row, each panel as wide as half of
/// [`TWO_PANEL_SIZE`] (so two panels give exactly [`two_panel_line_chart`]'s image).
///
/// When all panels have the same kind of y axis and none sets `y_range`, they share one y
/// range covering all of them.
///
/// # Errors
///
/// As [`line_chart`], for any panel; also if `panels` is empty.
pub fn panel_line_chart(path: &Path, panels: &[LineChart]) -> Result<()> {
    let titles: Vec<String> = panels.iter().map(|p| format!("{:?}", p.title)).collect();
    let what = || format!("panel chart {} -> {}", titles.join(" | "), path.display());
    ensure!(!panels.is_empty(), "{}: no panels", what());
    let prepared = prepare_panels(panels).with_context(what)?;
    let panel_width = TWO_PANEL_SIZE.0 / 2;
    let size = (panel_width * panels.len() as u32, TWO_PANEL_SIZE.1);
    render_png(path, size, |root| {
        let areas = root.split_evenly((1, panels.len()));
        for (k, ((area, chart), prep)) in areas.iter().zip(panels).zip(&prepared).enumerate() {
            draw_line_chart(area, chart, prep).with_context(|| format!("panel {}", k + 1))?;
        }
        Ok(())
    })
    .with_context(what)
}

fn prepare_panels(panels: &[LineChart]) -> Result<Vec<PreparedLineChart>> {
    let own = panels
        .iter()
        .enumerate()
        .map(|(k, p)| prepare_line_chart(p, None).with_context(|| format!("panel {}", k + 1)))
        .collect::<Result<Vec<_>>>()?;
    let same_axis = panels.iter().all(|p| p.log_y == panels[0].log_y);
    let free = panels.iter().all(|p| p.y_range.is_none());
    if panels.len() > 1 && same_axis && free {
        let extents: Option<Vec<(f64, f64)>> = own.iter().map(|p| p.y_extent).collect();
        if let Some(extents) = extents {
            let shared = extents.iter().fold(None, |acc, &e| union(acc, Some(e)));
            return panels
                .iter()
                .map(|p| prepare_line_chart(p, shared))
                .collect();
        }
    }
    Ok(own)
}

/// Draws mean lines with shaded spread bands and markers to the PNG file `path`
/// ([`DEFAULT_SIZE`]).
///
/// A band with a single point is drawn as an error bar.
///
/// # Errors
///
/// Without writing anything: if there are no bands and no reference lines, if `y_range` is
/// invalid, or if `path` does not end in `.png`. Also if the file cannot be written.
pub fn band_chart(path: &Path, chart: &BandChart) -> Result<()> {
    let what = || format!("band chart {:?} -> {}", chart.title, path.display());
    let prepared = prepare_band_chart(chart).with_context(what)?;
    render_png(path, DEFAULT_SIZE, |root| {
        draw_band_chart(root, chart, &prepared)
    })
    .with_context(what)
}

/// Draws a heatmap with a colour bar (viridis colours) to the PNG file `path` ([`DEFAULT_SIZE`]).
///
/// # Errors
///
/// Without writing anything: if the grid is empty or ragged, if its size does not match
/// `x_values`/`y_values`, if the coordinates are not finite and strictly monotonic, if
/// `value_range` is invalid, or if `path` does not end in `.png`. Also if the file cannot be
/// written.
pub fn heatmap(path: &Path, h: &Heatmap) -> Result<()> {
    let what = || format!("heatmap {:?} -> {}", h.title, path.display());
    let prepared = prepare_heatmap(h).with_context(what)?;
    render_png(path, DEFAULT_SIZE, |root| draw_heatmap(root, h, &prepared)).with_context(what)
}

/// The perceptual colour map used by [`heatmap`]: viridis (dark purple at 0, yellow at 1),
/// linearly interpolated between 9 anchor colours. `t` is clamped to `0..=1`; NaN gives the
/// colour for 0.
#[must_use]
pub fn viridis(t: f64) -> Color {
    const ANCHORS: [(u8, u8, u8); 9] = [
        (0x44, 0x01, 0x54),
        (0x47, 0x2c, 0x7a),
        (0x3b, 0x51, 0x8b),
        (0x2c, 0x71, 0x8e),
        (0x21, 0x90, 0x8d),
        (0x27, 0xad, 0x81),
        (0x5c, 0xc8, 0x63),
        (0xaa, 0xdc, 0x32),
        (0xfd, 0xe7, 0x25),
    ];
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    let s = t * (ANCHORS.len() - 1) as f64;
    let i = (s.floor() as usize).min(ANCHORS.len() - 2);
    let f = s - i as f64;
    let (a, b) = (ANCHORS[i], ANCHORS[i + 1]);
    let mix = |x: u8, y: u8| (f64::from(x) + (f64::from(y) - f64::from(x)) * f).round() as u8;
    Color::rgb(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

// ---------------------------------------------------------------------------------------------
// Rendering plumbing
// ---------------------------------------------------------------------------------------------

type Area<'b> = DrawingArea<BitMapBackend<'b>, Shift>;
type Chart<'a, 'b> = ChartContext<'a, BitMapBackend<'b>, Cartesian2d<Axis, Axis>>;

/// Renders into an in-memory RGB buffer, then writes the PNG in one step, so a failure while
/// drawing never leaves a half-drawn file behind.
fn render_png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&Area<'_>) -> Result<()>,
) -> Result<()> {
    let is_png = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    ensure!(is_png, "the output file name must end in .png");
    let buffer = render_to_buffer(size, draw)?;
    let mut out = BitMapBackend::new(path, size);
    out.blit_bitmap((0, 0), size, &buffer)
        .map_err(|e| anyhow!("copying the image: {e}"))?;
    out.present()
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("writing PNG file {}", path.display()))
}

fn render_to_buffer(
    size: (u32, u32),
    draw: impl FnOnce(&Area<'_>) -> Result<()>,
) -> Result<Vec<u8>> {
    register_fonts()?;
    let mut buffer = vec![255u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, size).into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root)?;
        root.present()?;
    }
    Ok(buffer)
}

fn font(px: f64) -> FontDesc<'static> {
    FontDesc::new(FontFamily::SansSerif, px, FontStyle::Normal)
}

fn bold_font(px: f64) -> FontDesc<'static> {
    FontDesc::new(FontFamily::SansSerif, px, FontStyle::Bold)
}

fn text_width(area: &Area<'_>, text: &str, font: FontDesc<'static>) -> Result<u32> {
    Ok(area.estimate_text_size(text, &TextStyle::from(font))?.0)
}

/// The largest font size `<= max_px` (but at least `min_px`) at which `text` fits `width`.
fn fitting_size(
    area: &Area<'_>,
    text: &str,
    max_px: f64,
    min_px: f64,
    bold: bool,
    width: u32,
) -> Result<f64> {
    let mut px = max_px;
    while px > min_px {
        let f = if bold { bold_font(px) } else { font(px) };
        if text_width(area, text, f)? <= width {
            break;
        }
        px -= 1.0;
    }
    Ok(px.max(min_px))
}

/// Draws the title, subtitle and footnotes, and returns the area left for the plot.
fn draw_frame<'b>(
    area: &Area<'b>,
    title: &str,
    subtitle: Option<&str>,
    notes: &[String],
) -> Result<Area<'b>> {
    let (w, h) = area.dim_in_pixel();
    let usable = w.saturating_sub(40);
    let centre = (w / 2) as i32;
    let top = Pos::new(HPos::Center, VPos::Top);

    let mut y = 12.0;
    if !title.trim().is_empty() {
        let px = fitting_size(area, title, TITLE_PX, 16.0, true, usable)?;
        let style = TextStyle::from(bold_font(px)).color(&INK).pos(top);
        area.draw_text(title, &style, (centre, y as i32))?;
        y += px * 1.3;
    }
    for line in subtitle
        .unwrap_or("")
        .lines()
        .filter(|l| !l.trim().is_empty())
    {
        let px = fitting_size(area, line, SUBTITLE_PX, 11.0, false, usable)?;
        let style = TextStyle::from(font(px)).color(&MUTED_INK).pos(top);
        area.draw_text(line, &style, (centre, y as i32))?;
        y += px * 1.35;
    }
    let header = (y + 6.0).ceil() as u32;

    let note_line = (NOTE_PX * 1.4).ceil() as u32;
    let footer = if notes.is_empty() {
        0
    } else {
        notes.len() as u32 * note_line + 10
    };
    let left = Pos::new(HPos::Left, VPos::Top);
    for (i, note) in notes.iter().enumerate() {
        let px = fitting_size(area, note, NOTE_PX, 10.0, false, usable)?;
        let style = TextStyle::from(font(px)).color(&MUTED_INK).pos(left);
        let y = h.saturating_sub(footer) + 2 + i as u32 * note_line;
        area.draw_text(note, &style, (16, y as i32))?;
    }
    Ok(area.margin(header, footer, 0, 0))
}

/// Height of the area below the plot: tick labels plus the axis description.
fn x_label_area(x_label: &str) -> u32 {
    let desc = if x_label.trim().is_empty() {
        0
    } else {
        (AXIS_LABEL_PX * 1.4) as u32
    };
    TICK_LABEL_PX as u32 + 16 + desc
}

/// Builds the chart context on `body` and draws the axes, ticks, grid and axis descriptions.
fn build_chart<'a, 'b>(
    body: &'a Area<'b>,
    xa: &Axis,
    ya: &Axis,
    x_label: &str,
    y_label: &str,
    grid: bool,
    right_margin: u32,
) -> Result<Chart<'a, 'b>> {
    let mut widest = 0;
    for &t in &ya.major {
        widest = widest.max(text_width(body, &ya.label(t), font(TICK_LABEL_PX))?);
    }
    let y_desc = if y_label.trim().is_empty() {
        0
    } else {
        (AXIS_LABEL_PX * 1.5) as u32
    };
    let mut chart = ChartBuilder::on(body)
        .margin_top(8)
        .margin_left(12)
        .margin_right(right_margin)
        .margin_bottom(8)
        .x_label_area_size(x_label_area(x_label))
        .y_label_area_size(widest + 20 + y_desc)
        .build_cartesian_2d(xa.clone(), ya.clone())?;

    let x_fmt = |t: &f64| xa.label(*t);
    let y_fmt = |t: &f64| ya.label(*t);
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(x_label)
        .y_desc(y_label)
        .axis_desc_style(TextStyle::from(font(AXIS_LABEL_PX)).color(&INK))
        .label_style(TextStyle::from(font(TICK_LABEL_PX)).color(&INK))
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .axis_style(ShapeStyle::from(INK.mix(0.8)).stroke_width(1))
        .bold_line_style(ShapeStyle::from(INK.mix(0.13)).stroke_width(1))
        .light_line_style(ShapeStyle::from(INK.mix(0.05)).stroke_width(1))
        .set_all_tick_mark_size(6);
    if !grid {
        mesh.disable_mesh();
    }
    mesh.draw()?;
    Ok(chart)
}

fn line_style<C: plotters::style::Color>(color: C, width: u32) -> ShapeStyle {
    color.stroke_width(width)
}

/// Draws polylines given in plot coordinates, solid or dashed. Returns the series annotation
/// so the caller can attach a legend entry.
///
/// A thick line is drawn as a bundle of 1-pixel polylines shifted by up to half the stroke
/// width: plotters draws a thick polyline as one outline polygon, which leaves holes (a hatched
/// look) when noisy data has several points per pixel.
fn draw_polyline<'c, 'a, 'b>(
    chart: &'c mut Chart<'a, 'b>,
    runs: &[Vec<Pt>],
    style: ShapeStyle,
    dashed: bool,
) -> Result<&'c mut plotters::chart::SeriesAnno<'a, BitMapBackend<'b>>> {
    let plot = chart.plotting_area().strip_coord_spec();
    let base = plot.get_base_pixel();
    let thin = ShapeStyle {
        stroke_width: 1,
        ..style
    };
    let w = style.stroke_width.max(1) as i32;
    for run in runs {
        let pixels: Vec<Pixel> = run
            .iter()
            .map(|p| {
                let (x, y) = chart.backend_coord(p);
                (x - base.0, y - base.1)
            })
            .collect();
        let pieces = if dashed {
            dash_pieces(&pixels, f64::from(DASH), f64::from(DASH_GAP))
        } else {
            vec![pixels]
        };
        for piece in pieces.iter().filter(|p| p.len() > 1) {
            for dx in -(w - 1) / 2..=w / 2 {
                for dy in -(w - 1) / 2..=w / 2 {
                    let shifted: Vec<Pixel> =
                        piece.iter().map(|&(x, y)| (x + dx, y + dy)).collect();
                    plot.draw(&PathElement::new(shifted, thin))?;
                }
            }
        }
    }
    Ok(chart.draw_series(std::iter::empty::<PathElement<Pt>>())?)
}

/// A pixel position, relative to the top left corner of a drawing area.
type Pixel = (i32, i32);

/// Cuts a pixel polyline into dashes of length `on` separated by gaps of length `off`; the
/// pattern continues across vertices.
fn dash_pieces(points: &[Pixel], on: f64, off: f64) -> Vec<Vec<Pixel>> {
    let to_i = |p: Pt| (p.0.round() as i32, p.1.round() as i32);
    let Some(&first) = points.first() else {
        return Vec::new();
    };
    let mut pieces = Vec::new();
    let mut prev = (f64::from(first.0), f64::from(first.1));
    let mut current = vec![first];
    let mut drawing = true;
    let mut left = on;
    for &(x, y) in &points[1..] {
        let end = (f64::from(x), f64::from(y));
        let mut start = prev;
        let mut seg = (end.0 - start.0).hypot(end.1 - start.1);
        while seg > left {
            let t = left / seg;
            let cut = (
                start.0 + (end.0 - start.0) * t,
                start.1 + (end.1 - start.1) * t,
            );
            if drawing {
                current.push(to_i(cut));
                pieces.push(std::mem::take(&mut current));
            } else {
                current = vec![to_i(cut)];
            }
            drawing = !drawing;
            left = if drawing { on } else { off };
            start = cut;
            seg = (end.0 - start.0).hypot(end.1 - start.1);
        }
        left -= seg;
        if drawing {
            current.push((x, y));
        }
        prev = end;
    }
    if drawing && current.len() > 1 {
        pieces.push(current);
    }
    pieces
}

/// A legend entry drawn by [`Legend::draw`]: a line icon (solid or dashed), optionally with a
/// marker dot and a shaded band behind it.
struct LegendEntry {
    color: RGBColor,
    width: u32,
    dashed: bool,
    marker: bool,
    band: bool,
}

impl LegendEntry {
    fn attach<'a, 'b: 'a>(
        self,
        anno: &mut plotters::chart::SeriesAnno<'a, BitMapBackend<'b>>,
        label: &str,
    ) {
        let line = line_style(self.color, self.width);
        let (a, b) = if self.dashed { (11, 19) } else { (15, 15) };
        let marker = if self.marker {
            self.color.filled()
        } else {
            ShapeStyle::from(self.color.mix(0.0)).filled()
        };
        let band = if self.band {
            self.color.mix(0.22).filled()
        } else {
            ShapeStyle::from(self.color.mix(0.0)).filled()
        };
        anno.label(label).legend(move |(x, y)| {
            EmptyElement::at((x, y))
                + Rectangle::new([(0, -8), (30, 8)], band)
                + PathElement::new(vec![(0, 0), (a, 0)], line)
                + PathElement::new(vec![(b, 0), (30, 0)], line)
                + Circle::new((15, 0), MARKER_RADIUS, marker)
        });
    }
}

/// Collects what the legend needs: the labels (for sizing) and sample points of everything
/// drawn (for choosing the emptiest corner), in normalised plot coordinates.
#[derive(Default)]
struct Legend {
    labels: Vec<String>,
    samples: Vec<(f64, f64)>,
}

impl Legend {
    fn sample_runs(&mut self, runs: &[Vec<(f64, f64)>], b: &Bounds) {
        for run in runs {
            for w in run.windows(2) {
                let (p, q) = (b.normalise(w[0]), b.normalise(w[1]));
                let n = (((q.0 - p.0).hypot(q.1 - p.1)) / 0.005)
                    .ceil()
                    .clamp(1.0, 400.0) as usize;
                for i in 0..=n {
                    let t = i as f64 / n as f64;
                    self.samples
                        .push((p.0 + (q.0 - p.0) * t, p.1 + (q.1 - p.1) * t));
                }
            }
            if run.len() == 1 {
                self.samples.push(b.normalise(run[0]));
            }
        }
    }

    fn draw<'a, 'b: 'a>(&self, chart: &mut Chart<'a, 'b>, pos: LegendPos) -> Result<()> {
        if self.labels.len() < 2 || pos == LegendPos::Hidden {
            return Ok(());
        }
        let area = chart.plotting_area().strip_coord_spec();
        let mut widest = 0;
        for l in &self.labels {
            widest = widest.max(
                area.estimate_text_size(l, &TextStyle::from(font(LEGEND_PX)))?
                    .0,
            );
        }
        let margin = 12;
        let icon = 44;
        let (w, h) = (
            widest + icon + 2 * margin,
            (self.labels.len() as f64 * LEGEND_PX * 1.25) as u32 + 2 * margin,
        );
        let (aw, ah) = area.dim_in_pixel();
        let pos = match pos {
            LegendPos::Auto => emptiest_position(&self.samples, (w, h), (aw, ah)),
            p => p,
        };
        let (x, y) = legend_origin(pos, (w, h), (aw, ah));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::Coordinate(x, y))
            .margin(margin)
            .legend_area_size(icon)
            .label_font(TextStyle::from(font(LEGEND_PX)).color(&INK))
            .background_style(WHITE.mix(0.92))
            .border_style(ShapeStyle::from(INK.mix(0.35)).stroke_width(1))
            .draw()?;
        Ok(())
    }
}

/// Top left pixel of a legend box of size `(w, h)` at `pos` in a plot area of size `(aw, ah)`.
fn legend_origin(pos: LegendPos, (w, h): (u32, u32), (aw, ah): (u32, u32)) -> Pixel {
    const INSET: f64 = 12.0;
    let (fx, fy) = pos.anchor();
    let free_x = f64::from(aw) - f64::from(w) - 2.0 * INSET;
    let free_y = f64::from(ah) - f64::from(h) - 2.0 * INSET;
    (
        (INSET + fx * free_x.max(0.0)).round() as i32,
        (INSET + fy * free_y.max(0.0)).round() as i32,
    )
}

/// The legend position whose box (slightly enlarged) covers the fewest samples; `samples` are
/// in normalised plot coordinates (0..1, y up).
fn emptiest_position(samples: &[Pt], size: (u32, u32), area: (u32, u32)) -> LegendPos {
    const SLACK: f64 = 0.02;
    let candidates = [
        LegendPos::UpperRight,
        LegendPos::UpperLeft,
        LegendPos::LowerRight,
        LegendPos::LowerLeft,
        LegendPos::MiddleRight,
        LegendPos::MiddleLeft,
        LegendPos::UpperCenter,
        LegendPos::LowerCenter,
    ];
    let (aw, ah) = (f64::from(area.0.max(1)), f64::from(area.1.max(1)));
    let mut best = (usize::MAX, LegendPos::UpperRight);
    for pos in candidates {
        let (x, y) = legend_origin(pos, size, area);
        let x0 = f64::from(x) / aw - SLACK;
        let x1 = f64::from(x + size.0 as i32) / aw + SLACK;
        let y0 = 1.0 - f64::from(y + size.1 as i32) / ah - SLACK;
        let y1 = 1.0 - f64::from(y) / ah + SLACK;
        let hits = samples
            .iter()
            .filter(|(x, y)| *x >= x0 && *x <= x1 && *y >= y0 && *y <= y1)
            .count();
        if hits < best.0 {
            best = (hits, pos);
        }
    }
    best.1
}

// ---------------------------------------------------------------------------------------------
// Axes: ranges, ticks and tick labels
// ---------------------------------------------------------------------------------------------

/// One axis. Log axes are drawn on a linear coordinate holding log10 of the data, so all
/// charts share a single coordinate type and clipping happens in one, linear, space.
#[derive(Clone, Debug)]
struct Axis {
    log: bool,
    /// Range in plot space (log10 of the data on a log axis).
    lo: f64,
    hi: f64,
    /// Labelled tick positions, in plot space.
    major: Vec<f64>,
    /// Unlabelled grid lines, in plot space.
    minor: Vec<f64>,
    /// Tick labels in `1e-5` style.
    sci: bool,
    /// Decimals of linear tick labels.
    decimals: usize,
}

impl Axis {
    /// Plot-space coordinate of a data value, or `None` if it cannot be shown on this axis.
    fn to_plot(log: bool, v: f64) -> Option<f64> {
        match (log, v.is_finite()) {
            (_, false) => None,
            (true, _) if v <= 0.0 => None,
            (true, _) => Some(v.log10()),
            (false, _) => Some(v),
        }
    }

    fn linear(lo: f64, hi: f64, target_ticks: usize, forced: Option<Vec<f64>>) -> Axis {
        let mut step = nice_step(hi - lo, target_ticks);
        let major = match forced {
            Some(ticks) => {
                // Labels need only as many decimals as the given ticks.
                step = ticks.first().copied().unwrap_or(step);
                ticks
            }
            None => {
                let first = (lo / step - 1e-9).ceil() as i64;
                let last = (hi / step + 1e-9).floor() as i64;
                if (0..=100).contains(&last.saturating_sub(first)) {
                    (first..=last).map(|i| i as f64 * step).collect()
                } else {
                    vec![lo, hi] // absurd ranges (e.g. overflowing spans)
                }
            }
        };
        let big = lo.abs().max(hi.abs());
        let sci = big >= 1e6 || (step < 1e-4 && big < 1e-2);
        Axis {
            log: false,
            lo,
            hi,
            decimals: decimals_for(&major, step),
            major,
            minor: Vec::new(),
            sci,
        }
    }

    fn log(lo: f64, hi: f64, forced: Option<Vec<f64>>) -> Axis {
        let (major, minor) = match forced {
            Some(ticks) => (ticks, Vec::new()),
            None => log_ticks(lo, hi),
        };
        let sci = major.iter().any(|t| {
            let e = (t + 1e-9).floor();
            !(-3.0..=4.0).contains(&e)
        });
        Axis {
            log: true,
            lo,
            hi,
            major,
            minor,
            sci,
            decimals: 0,
        }
    }

    fn label(&self, t: f64) -> String {
        if self.log {
            let v = 10f64.powf(t);
            if self.sci { fmt_sci(v) } else { fmt_plain(v) }
        } else if self.sci {
            fmt_sci(t)
        } else {
            let s = format!("{:.*}", self.decimals, t);
            if s.trim_start_matches('-')
                .chars()
                .all(|c| c == '0' || c == '.')
            {
                format!("{:.*}", self.decimals, 0.0) // no "-0.0"
            } else {
                s
            }
        }
    }
}

/// A "nice" tick step (1, 2, 2.5 or 5 times a power of ten) giving about `target` ticks.
fn nice_step(span: f64, target: usize) -> f64 {
    let raw = (span / target.max(1) as f64).abs();
    if !raw.is_finite() || raw == 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 2.5 {
        2.5
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// The fewest decimals that print every tick (and the step) exactly.
fn decimals_for(ticks: &[f64], step: f64) -> usize {
    (0..=12)
        .find(|&d| {
            let scale = 10f64.powi(d as i32);
            std::iter::once(step).chain(ticks.iter().copied()).all(|v| {
                let scaled = v * scale;
                (scaled - scaled.round()).abs() <= 1e-6 * scaled.abs().max(1.0)
            })
        })
        .unwrap_or(12)
}

/// Ticks of a log10 axis spanning plot-space `lo..hi`: labelled powers of ten (every k-th one
/// when there are many) with grid lines at 2..9 times them; for narrow ranges, 1-2-5 ticks.
fn log_ticks(lo: f64, hi: f64) -> (Vec<f64>, Vec<f64>) {
    let inside = |t: &f64| *t >= lo - 1e-9 && *t <= hi + 1e-9;
    let e0 = (lo - 1e-9).ceil() as i64;
    let e1 = (hi + 1e-9).floor() as i64;
    let decades = e1 - e0 + 1;
    let multiples = |ms: &[f64]| -> Vec<f64> {
        ((lo.floor() as i64)..=(hi.ceil() as i64))
            .flat_map(|e| ms.iter().map(move |m| e as f64 + m.log10()))
            .filter(inside)
            .collect()
    };
    if decades >= 3 {
        let stride = [1, 2, 3, 4, 5, 10, 20, 50, 100]
            .into_iter()
            .find(|s| decades / s <= 9)
            .unwrap_or(100);
        let major: Vec<f64> = (e0..=e1)
            .filter(|e| e.rem_euclid(stride) == 0)
            .map(|e| e as f64)
            .collect();
        let minor = if stride == 1 && decades <= 12 {
            multiples(&[2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
        } else if decades <= 40 {
            (e0..=e1)
                .filter(|e| e.rem_euclid(stride) != 0)
                .map(|e| e as f64)
                .collect()
        } else {
            Vec::new() // a grid line per decade would grey out the plot
        };
        (major, minor)
    } else {
        let mut major = multiples(&[1.0, 2.0, 5.0]);
        if major.len() < 3 {
            major = multiples(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
        }
        if major.len() < 2 {
            // Less than a factor of two: fall back to nice linear ticks of the data values.
            let (a, b) = (10f64.powf(lo), 10f64.powf(hi));
            let step = nice_step(b - a, 4);
            let first = (a / step).ceil() as i64;
            let last = (b / step).floor() as i64;
            major = (first..=last).map(|i| (i as f64 * step).log10()).collect();
        }
        let minor = multiples(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
            .into_iter()
            .filter(|m| major.iter().all(|t| (t - m).abs() > 1e-9))
            .collect();
        (major, minor)
    }
}

/// `1e-5`, `2.5e3`, `1e0`: scientific notation without trailing zeros.
fn fmt_sci(v: f64) -> String {
    if v == 0.0 {
        return "0".to_string();
    }
    let s = format!("{v:.3e}");
    match s.split_once('e') {
        Some((mantissa, exp)) => {
            let mantissa = if mantissa.contains('.') {
                mantissa.trim_end_matches('0').trim_end_matches('.')
            } else {
                mantissa
            };
            format!("{mantissa}e{exp}")
        }
        None => s,
    }
}

/// `0.001`, `20`, `1000`: plain decimal with at most 6 significant digits.
fn fmt_plain(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let magnitude = v.abs().log10().floor() as i32;
    let decimals = (2 - magnitude).clamp(0, 15) as usize; // 3 significant digits
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Extent of the finite values, if any.
fn extent(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((a, b)) => Some((a.min(v), b.max(v))),
        })
}

fn union(a: Option<(f64, f64)>, b: Option<(f64, f64)>) -> Option<(f64, f64)> {
    match (a, b) {
        (Some(a), Some(b)) => Some((a.0.min(b.0), a.1.max(b.1))),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Widens a plot-space range by `frac` of its span on both sides; widens degenerate ranges to
/// something drawable.
fn padded((lo, hi): (f64, f64), frac: f64, log: bool) -> (f64, f64) {
    let span = hi - lo;
    if span <= 1e-12 * lo.abs().max(hi.abs()).max(1e-300) {
        let d = if log {
            0.5
        } else if lo.abs() > 0.0 {
            lo.abs() * 0.1
        } else {
            1.0
        };
        (lo - d, hi + d)
    } else {
        (lo - frac * span, hi + frac * span)
    }
}

/// Validates a caller-given range and converts it to plot space.
fn plot_range(range: (f64, f64), log: bool, axis: &str) -> Result<(f64, f64)> {
    let (a, b) = range;
    ensure!(
        a.is_finite() && b.is_finite() && a < b,
        "{axis} range {a}..{b} must be finite and increasing"
    );
    match (Axis::to_plot(log, a), Axis::to_plot(log, b)) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => bail!("{axis} range {a}..{b} must be positive on a log axis"),
    }
}

/// Plotters coordinate for an [`Axis`]: linear in plot space, with our own tick positions
/// (labelled ticks for bold grid lines, the rest for light grid lines).
impl Ranged for Axis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let frac = (value - self.lo) / (self.hi - self.lo);
        let pixels = f64::from(limit.1 - limit.0) * frac;
        limit.0.saturating_add(pixels.round() as i32)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            self.minor.clone()
        } else {
            self.major.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

// ---------------------------------------------------------------------------------------------
// Clipping in plot space
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
struct Bounds {
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
}

impl Bounds {
    fn of(xa: &Axis, ya: &Axis) -> Bounds {
        Bounds {
            x0: xa.lo,
            x1: xa.hi,
            y0: ya.lo,
            y1: ya.hi,
        }
    }

    fn contains(&self, (x, y): (f64, f64)) -> bool {
        x >= self.x0 && x <= self.x1 && y >= self.y0 && y <= self.y1
    }

    fn normalise(&self, (x, y): (f64, f64)) -> (f64, f64) {
        (
            (x - self.x0) / (self.x1 - self.x0),
            (y - self.y0) / (self.y1 - self.y0),
        )
    }
}

type Pt = (f64, f64);

/// Liang–Barsky: the part of segment `p`–`q` inside `b`.
fn clip_segment(p: Pt, q: Pt, b: &Bounds) -> Option<(Pt, Pt)> {
    let (dx, dy) = (q.0 - p.0, q.1 - p.1);
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    for (pk, qk) in [
        (-dx, p.0 - b.x0),
        (dx, b.x1 - p.0),
        (-dy, p.1 - b.y0),
        (dy, b.y1 - p.1),
    ] {
        if pk == 0.0 {
            if qk < 0.0 {
                return None;
            }
        } else {
            let r = qk / pk;
            if pk < 0.0 {
                if r > t1 {
                    return None;
                }
                t0 = t0.max(r);
            } else {
                if r < t0 {
                    return None;
                }
                t1 = t1.min(r);
            }
        }
    }
    Some((
        (p.0 + t0 * dx, p.1 + t0 * dy),
        (p.0 + t1 * dx, p.1 + t1 * dy),
    ))
}

/// The parts of a polyline inside `b`, as separate runs.
fn clip_polyline(points: &[Pt], b: &Bounds) -> Vec<Vec<Pt>> {
    let mut runs: Vec<Vec<Pt>> = Vec::new();
    let mut current: Vec<Pt> = Vec::new();
    if points.len() == 1 && b.contains(points[0]) {
        return vec![points.to_vec()];
    }
    for w in points.windows(2) {
        match clip_segment(w[0], w[1], b) {
            Some((s, e)) => {
                if current.last() != Some(&s) {
                    if current.len() > 1 {
                        runs.push(std::mem::take(&mut current));
                    }
                    current.clear();
                    current.push(s);
                }
                current.push(e);
            }
            None => {
                if current.len() > 1 {
                    runs.push(std::mem::take(&mut current));
                }
                current.clear();
            }
        }
    }
    if current.len() > 1 {
        runs.push(current);
    }
    runs
}

/// Sutherland–Hodgman: the part of a polygon inside `b`.
fn clip_polygon(poly: &[Pt], b: &Bounds) -> Vec<Pt> {
    let mut out = poly.to_vec();
    // (use y instead of x, limit, keep the side above the limit)
    for (use_y, limit, keep_above) in [
        (false, b.x0, true),
        (false, b.x1, false),
        (true, b.y0, true),
        (true, b.y1, false),
    ] {
        let Some(&last) = out.last() else {
            break;
        };
        let coord = |p: Pt| if use_y { p.1 } else { p.0 };
        let inside = |p: Pt| {
            if keep_above {
                coord(p) >= limit
            } else {
                coord(p) <= limit
            }
        };
        let cross = |p: Pt, q: Pt| {
            let t = (limit - coord(p)) / (coord(q) - coord(p));
            (p.0 + t * (q.0 - p.0), p.1 + t * (q.1 - p.1))
        };
        let input = std::mem::take(&mut out);
        let mut prev = last;
        for &cur in &input {
            match (inside(cur), inside(prev)) {
                (true, true) => out.push(cur),
                (true, false) => {
                    out.push(cross(prev, cur));
                    out.push(cur);
                }
                (false, true) => out.push(cross(prev, cur)),
                (false, false) => {}
            }
            prev = cur;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Line charts
// ---------------------------------------------------------------------------------------------

struct PreparedLine {
    /// Unclipped plot-space runs (split where points could not be shown).
    runs: Vec<Vec<Pt>>,
    markers: bool,
}

struct PreparedLineChart {
    xa: Axis,
    ya: Axis,
    lines: Vec<PreparedLine>,
    /// Plot-space y of each reference line (None: not drawable).
    hlines: Vec<Option<f64>>,
    /// x of each vertical reference line (None: not finite).
    vlines: Vec<Option<f64>>,
    notes: Vec<String>,
    /// Plot-space y extent of the data and reference lines (before padding).
    y_extent: Option<(f64, f64)>,
}

/// Checks the chart, converts the data to plot space and chooses the axes. `shared_y` (plot
/// space, unpadded) replaces the chart's own data extent.
fn prepare_line_chart(
    chart: &LineChart,
    shared_y: Option<(f64, f64)>,
) -> Result<PreparedLineChart> {
    ensure!(
        !chart.series.is_empty() || !chart.hlines.is_empty(),
        "nothing to draw: the chart has no series and no reference lines"
    );
    let log = chart.log_y;
    let mut notes = Vec::new();
    let mut lines = Vec::new();
    for s in &chart.series {
        let mut runs: Vec<Vec<Pt>> = vec![Vec::new()];
        let mut dropped = 0;
        let mut valid = 0;
        for &(x, y) in &s.points {
            match (Axis::to_plot(false, x), Axis::to_plot(log, y)) {
                (Some(px), Some(py)) => {
                    runs.last_mut().expect("non-empty").push((px, py));
                    valid += 1;
                }
                _ => {
                    dropped += 1;
                    if !runs.last().expect("non-empty").is_empty() {
                        runs.push(Vec::new());
                    }
                }
            }
        }
        runs.retain(|r| !r.is_empty());
        if dropped > 0 {
            let why = if log {
                "zero, negative or not finite: cannot be shown on a log axis"
            } else {
                "not finite"
            };
            notes.push(format!(
                "{} of {} points of {} not shown ({why}).",
                dropped,
                s.points.len(),
                name_of(&s.label)
            ));
        }
        lines.push(PreparedLine {
            runs,
            markers: valid <= MAX_POINTS_WITH_MARKERS,
        });
    }
    let mut hlines = Vec::new();
    for h in &chart.hlines {
        let y = Axis::to_plot(log, h.y);
        if y.is_none() {
            notes.push(format!(
                "Reference line {} at y = {} cannot be shown on this axis.",
                name_of(&h.label),
                h.y
            ));
        }
        hlines.push(y);
    }

    let vlines: Vec<Option<f64>> = chart
        .vlines
        .iter()
        .map(|v| v.x.is_finite().then_some(v.x))
        .collect();
    for (v, x) in chart.vlines.iter().zip(&vlines) {
        if x.is_none() {
            notes.push(format!(
                "Reference line {} at x = {} cannot be shown.",
                name_of(&v.label),
                v.x
            ));
        }
    }
    let all_points = || lines.iter().flat_map(|l| l.runs.iter().flatten());
    let any_markers = lines.iter().any(|l| l.markers && !l.runs.is_empty());
    let x_data = union(
        extent(all_points().map(|p| p.0)),
        extent(vlines.iter().flatten().copied()),
    );
    let y_data = union(
        extent(all_points().map(|p| p.1)),
        extent(hlines.iter().flatten().copied()),
    );
    if x_data.is_none() && !chart.series.is_empty() {
        notes.push("No plottable data points.".to_string());
    }

    let (x_lo, x_hi) = match chart.x_range {
        Some(r) => plot_range(r, false, "x")?,
        None => padded(
            x_data.unwrap_or((0.0, 1.0)),
            if any_markers { 0.03 } else { 0.0 },
            false,
        ),
    };
    let (y_lo, y_hi) = match chart.y_range {
        Some(r) => plot_range(r, log, "y")?,
        None => {
            let fallback = if log { (-1.0, 1.0) } else { (0.0, 1.0) };
            padded(shared_y.or(y_data).unwrap_or(fallback), 0.05, log)
        }
    };
    let xa = Axis::linear(x_lo, x_hi, 8, None);
    let ya = if log {
        Axis::log(y_lo, y_hi, None)
    } else {
        Axis::linear(y_lo, y_hi, 6, None)
    };
    for (h, y) in chart.hlines.iter().zip(&hlines) {
        if let Some(y) = y
            && (*y < ya.lo || *y > ya.hi)
        {
            notes.push(format!(
                "Reference line {} at y = {} is outside the y range.",
                name_of(&h.label),
                fmt_plain(h.y)
            ));
        }
    }
    for (v, x) in chart.vlines.iter().zip(&vlines) {
        if let Some(x) = x
            && (*x < xa.lo || *x > xa.hi)
        {
            notes.push(format!(
                "Reference line {} at x = {} is outside the x range.",
                name_of(&v.label),
                fmt_plain(v.x)
            ));
        }
    }
    Ok(PreparedLineChart {
        xa,
        ya,
        lines,
        hlines,
        vlines,
        notes: condense_notes(notes),
        y_extent: y_data,
    })
}

fn name_of(label: &str) -> String {
    if label.trim().is_empty() {
        "an unlabelled series".to_string()
    } else {
        format!("\u{201c}{label}\u{201d}")
    }
}

/// Keeps the footer short: at most three lines.
fn condense_notes(mut notes: Vec<String>) -> Vec<String> {
    if notes.len() > 3 {
        let rest = notes.len() - 2;
        notes.truncate(2);
        notes.push(format!("… and {rest} more notes like these."));
    }
    notes
}

fn draw_line_chart(area: &Area<'_>, chart: &LineChart, prep: &PreparedLineChart) -> Result<()> {
    let body = draw_frame(area, &chart.title, chart.subtitle.as_deref(), &prep.notes)?;
    let mut ctx = build_chart(
        &body,
        &prep.xa,
        &prep.ya,
        &chart.x_label,
        &chart.y_label,
        true,
        30,
    )?;
    let bounds = Bounds::of(&prep.xa, &prep.ya);
    let mut legend = Legend::default();

    // Reference lines go under the data but after it in the legend.
    let drawn_hlines = draw_hlines(&mut ctx, &chart.hlines, &prep.hlines, &bounds, &mut legend)?;
    let drawn_vlines = draw_vlines(&mut ctx, &chart.vlines, &prep.vlines, &bounds, &mut legend)?;

    for (s, line) in chart.series.iter().zip(&prep.lines) {
        let color = s.color.to_plotters();
        let runs: Vec<Vec<Pt>> = line
            .runs
            .iter()
            .flat_map(|r| clip_polyline(r, &bounds))
            .collect();
        legend.sample_runs(&runs, &bounds);
        let mut visible = !runs.is_empty();
        // A point between two gaps has no line: give it a dot so that it does not vanish.
        let isolated: Vec<Pt> = line
            .runs
            .iter()
            .filter(|r| r.len() == 1 && bounds.contains(r[0]))
            .map(|r| r[0])
            .collect();
        if !line.markers && !isolated.is_empty() {
            visible = true;
            ctx.draw_series(
                isolated
                    .iter()
                    .map(|p| Circle::new(*p, ISOLATED_DOT_RADIUS, color.filled())),
            )?;
        }
        if line.markers {
            let inside: Vec<Pt> = line
                .runs
                .iter()
                .flatten()
                .copied()
                .filter(|p| bounds.contains(*p))
                .collect();
            visible |= !inside.is_empty();
            ctx.draw_series(
                inside
                    .iter()
                    .map(|p| Circle::new(*p, MARKER_RADIUS, color.filled())),
            )?;
        }
        let width = if s.thin { THIN_LINE_WIDTH } else { LINE_WIDTH };
        let anno = draw_polyline(&mut ctx, &runs, line_style(color, width), s.dashed)?;
        if visible && !s.label.is_empty() {
            legend.labels.push(s.label.clone());
            let entry = LegendEntry {
                color,
                width: LINE_WIDTH,
                dashed: s.dashed,
                marker: line.markers,
                band: false,
            };
            entry.attach(anno, &s.label);
        }
    }
    add_hline_legend(&mut ctx, &chart.hlines, &drawn_hlines, &mut legend)?;
    let vline_refs: Vec<RefLine> = chart.vlines.iter().map(RefLine::from).collect();
    add_ref_legend(&mut ctx, &vline_refs, &drawn_vlines, &mut legend)?;
    legend.draw(&mut ctx, chart.legend)
}

/// What the legend needs to know about a reference line.
struct RefLine<'a> {
    label: &'a str,
    color: Color,
    dashed: bool,
}

impl<'a> From<&'a HLine> for RefLine<'a> {
    fn from(h: &'a HLine) -> Self {
        RefLine {
            label: &h.label,
            color: h.color,
            dashed: h.dashed,
        }
    }
}

impl<'a> From<&'a VLine> for RefLine<'a> {
    fn from(v: &'a VLine) -> Self {
        RefLine {
            label: &v.label,
            color: v.color,
            dashed: v.dashed,
        }
    }
}

/// Draws the vertical reference lines that fall inside the plot and returns which ones were
/// drawn.
fn draw_vlines(
    ctx: &mut Chart<'_, '_>,
    vlines: &[VLine],
    xs: &[Option<f64>],
    bounds: &Bounds,
    legend: &mut Legend,
) -> Result<Vec<bool>> {
    let mut drawn = Vec::new();
    for (v, x) in vlines.iter().zip(xs) {
        let runs: Vec<Vec<Pt>> = match x {
            Some(x) if (bounds.x0..=bounds.x1).contains(x) => {
                vec![vec![(*x, bounds.y0), (*x, bounds.y1)]]
            }
            _ => Vec::new(),
        };
        legend.sample_runs(&runs, bounds);
        let style = line_style(v.color.to_plotters(), REF_LINE_WIDTH);
        draw_polyline(ctx, &runs, style, v.dashed)?;
        drawn.push(!runs.is_empty());
    }
    Ok(drawn)
}

/// Draws the reference lines that fall inside the plot and returns which ones were drawn.
fn draw_hlines(
    ctx: &mut Chart<'_, '_>,
    hlines: &[HLine],
    ys: &[Option<f64>],
    bounds: &Bounds,
    legend: &mut Legend,
) -> Result<Vec<bool>> {
    let mut drawn = Vec::new();
    for (h, y) in hlines.iter().zip(ys) {
        let runs: Vec<Vec<Pt>> = match y {
            Some(y) if (bounds.y0..=bounds.y1).contains(y) => {
                vec![vec![(bounds.x0, *y), (bounds.x1, *y)]]
            }
            _ => Vec::new(),
        };
        legend.sample_runs(&runs, bounds);
        let style = line_style(h.color.to_plotters(), REF_LINE_WIDTH);
        draw_polyline(ctx, &runs, style, h.dashed)?;
        drawn.push(!runs.is_empty());
    }
    Ok(drawn)
}

/// Legend entries for the horizontal reference lines that were drawn.
fn add_hline_legend<'a, 'b: 'a>(
    ctx: &mut Chart<'a, 'b>,
    hlines: &[HLine],
    drawn: &[bool],
    legend: &mut Legend,
) -> Result<()> {
    let refs: Vec<RefLine> = hlines.iter().map(RefLine::from).collect();
    add_ref_legend(ctx, &refs, drawn, legend)
}

/// Legend entries for the reference lines that were drawn.
fn add_ref_legend<'a, 'b: 'a>(
    ctx: &mut Chart<'a, 'b>,
    refs: &[RefLine],
    drawn: &[bool],
    legend: &mut Legend,
) -> Result<()> {
    for (r, _) in refs
        .iter()
        .zip(drawn)
        .filter(|(r, d)| **d && !r.label.is_empty())
    {
        let anno = ctx.draw_series(std::iter::empty::<PathElement<Pt>>())?;
        legend.labels.push(r.label.to_string());
        let entry = LegendEntry {
            color: r.color.to_plotters(),
            width: REF_LINE_WIDTH,
            dashed: r.dashed,
            marker: false,
            band: false,
        };
        entry.attach(anno, r.label);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Band charts
// ---------------------------------------------------------------------------------------------

struct PreparedBandChart {
    xa: Axis,
    ya: Axis,
    /// Per band: plot-space `(x, mean, lo, hi)`, sorted by x.
    bands: Vec<Vec<(f64, f64, f64, f64)>>,
    hlines: Vec<Option<f64>>,
    notes: Vec<String>,
}

fn prepare_band_chart(chart: &BandChart) -> Result<PreparedBandChart> {
    ensure!(
        !chart.bands.is_empty() || !chart.hlines.is_empty(),
        "nothing to draw: the chart has no bands and no reference lines"
    );
    let mut notes = Vec::new();
    let mut bands = Vec::new();
    for b in &chart.bands {
        let mut pts: Vec<(f64, f64, f64, f64)> = b
            .points
            .iter()
            .filter_map(|&(x, m, lo, hi)| {
                let x = Axis::to_plot(chart.log_x, x)?;
                let ok = m.is_finite() && lo.is_finite() && hi.is_finite();
                ok.then_some((x, m, lo.min(hi), lo.max(hi)))
            })
            .collect();
        let dropped = b.points.len() - pts.len();
        if dropped > 0 {
            let why = if chart.log_x {
                "a value not finite, or x <= 0 on the log x axis"
            } else {
                "a value not finite"
            };
            notes.push(format!(
                "{} of {} points of {} not shown ({why}).",
                dropped,
                b.points.len(),
                name_of(&b.label)
            ));
        }
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        bands.push(pts);
    }
    let hlines: Vec<Option<f64>> = chart
        .hlines
        .iter()
        .map(|h| h.y.is_finite().then_some(h.y))
        .collect();
    for (h, y) in chart.hlines.iter().zip(&hlines) {
        match (y, chart.y_range) {
            (None, _) => notes.push(format!(
                "Reference line {} at y = {} cannot be shown.",
                name_of(&h.label),
                fmt_plain(h.y)
            )),
            (Some(y), Some((a, b))) if *y < a || *y > b => notes.push(format!(
                "Reference line {} at y = {} is outside the y range.",
                name_of(&h.label),
                fmt_plain(h.y)
            )),
            _ => {}
        }
    }
    let all = || bands.iter().flatten();
    let x_data = extent(all().map(|p| p.0));
    if x_data.is_none() && !chart.bands.is_empty() {
        notes.push("No plottable data points.".to_string());
    }
    let y_data = union(
        extent(all().flat_map(|p| [p.1, p.2, p.3])),
        extent(hlines.iter().flatten().copied()),
    );
    let (y_lo, y_hi) = match chart.y_range {
        Some(r) => plot_range(r, false, "y")?,
        None => padded(y_data.unwrap_or((0.0, 1.0)), 0.05, false),
    };
    let (x_lo, x_hi) = padded(x_data.unwrap_or((0.0, 1.0)), 0.04, chart.log_x);

    let mut xs: Vec<f64> = all().map(|p| p.0).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup_by(|a, b| (*a - *b).abs() <= 1e-9 * a.abs().max(1.0));
    // Ticks at the data's x values, unless there are many or their labels would collide.
    let min_gap = xs
        .windows(2)
        .map(|w| w[1] - w[0])
        .fold(f64::INFINITY, f64::min);
    let roomy = min_gap >= 0.05 * (x_hi - x_lo);
    let forced = (!xs.is_empty() && xs.len() <= 12 && roomy).then_some(xs);
    let xa = if chart.log_x {
        Axis::log(x_lo, x_hi, forced)
    } else {
        match forced {
            Some(ticks) if ticks.len() >= 2 => Axis::linear(x_lo, x_hi, 8, Some(ticks)),
            _ => Axis::linear(x_lo, x_hi, 8, None),
        }
    };
    let ya = Axis::linear(y_lo, y_hi, 6, None);
    Ok(PreparedBandChart {
        xa,
        ya,
        bands,
        hlines,
        notes: condense_notes(notes),
    })
}

fn draw_band_chart(area: &Area<'_>, chart: &BandChart, prep: &PreparedBandChart) -> Result<()> {
    let body = draw_frame(area, &chart.title, chart.subtitle.as_deref(), &prep.notes)?;
    let mut ctx = build_chart(
        &body,
        &prep.xa,
        &prep.ya,
        &chart.x_label,
        &chart.y_label,
        true,
        30,
    )?;
    let bounds = Bounds::of(&prep.xa, &prep.ya);
    let mut legend = Legend::default();

    // Shaded bands first, so that no band hides another band's line.
    for (b, pts) in chart.bands.iter().zip(&prep.bands) {
        let color = b.color.to_plotters();
        if pts.len() == 1 {
            // A single point has no band: show its spread as an error bar.
            let (x, _, lo, hi) = pts[0];
            let runs = clip_polyline(&[(x, lo), (x, hi)], &bounds);
            legend.sample_runs(&runs, &bounds);
            draw_polyline(&mut ctx, &runs, line_style(color, 2), false)?;
            let cap = |y: f64| {
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(-8, 0), (8, 0)], line_style(color, 2))
            };
            let caps = [lo, hi].into_iter().filter(|y| bounds.contains((x, *y)));
            ctx.draw_series(caps.map(cap))?;
            continue;
        }
        let outline: Vec<Pt> = pts
            .iter()
            .map(|p| (p.0, p.3))
            .chain(pts.iter().rev().map(|p| (p.0, p.2)))
            .collect();
        let clipped = clip_polygon(&outline, &bounds);
        if clipped.len() >= 3 {
            ctx.draw_series(std::iter::once(Polygon::new(
                clipped,
                color.mix(0.18).filled(),
            )))?;
        }
        for f in [0.0, 0.25, 0.5, 0.75, 1.0] {
            let inside: Vec<Pt> = pts.iter().map(|p| (p.0, p.2 + f * (p.3 - p.2))).collect();
            legend.sample_runs(&clip_polyline(&inside, &bounds), &bounds);
        }
        for edge in [
            pts.iter().map(|p| (p.0, p.2)).collect::<Vec<_>>(),
            pts.iter().map(|p| (p.0, p.3)).collect(),
        ] {
            let runs = clip_polyline(&edge, &bounds);
            draw_polyline(&mut ctx, &runs, line_style(color.mix(0.45), 1), false)?;
        }
    }

    let drawn_hlines = draw_hlines(&mut ctx, &chart.hlines, &prep.hlines, &bounds, &mut legend)?;

    for (b, pts) in chart.bands.iter().zip(&prep.bands) {
        let color = b.color.to_plotters();
        let mean: Vec<Pt> = pts.iter().map(|p| (p.0, p.1)).collect();
        let runs = clip_polyline(&mean, &bounds);
        legend.sample_runs(&runs, &bounds);
        let anno = draw_polyline(&mut ctx, &runs, line_style(color, LINE_WIDTH), false)?;
        let visible = !runs.is_empty() || mean.iter().any(|p| bounds.contains(*p));
        if visible && !b.label.is_empty() {
            legend.labels.push(b.label.clone());
            let entry = LegendEntry {
                color,
                width: LINE_WIDTH,
                dashed: false,
                marker: true,
                band: true,
            };
            entry.attach(anno, &b.label);
        }
        let inside = mean.iter().filter(|p| bounds.contains(**p));
        ctx.draw_series(inside.map(|p| {
            EmptyElement::at(*p)
                + Circle::new((0, 0), BAND_MARKER_RADIUS + 1, WHITE.filled())
                + Circle::new((0, 0), BAND_MARKER_RADIUS, color.filled())
        }))?;
    }
    add_hline_legend(&mut ctx, &chart.hlines, &drawn_hlines, &mut legend)?;
    legend.draw(&mut ctx, chart.legend)
}

// ---------------------------------------------------------------------------------------------
// Heatmaps
// ---------------------------------------------------------------------------------------------

struct PreparedHeatmap {
    x_edges: Vec<f64>,
    y_edges: Vec<f64>,
    xa: Axis,
    ya: Axis,
    /// Colour scale.
    vmin: f64,
    vmax: f64,
    va: Axis,
    notes: Vec<String>,
}

/// Cell boundaries for cell centres `c`: midpoints between neighbours, extended half a cell at
/// both ends.
fn cell_edges(c: &[f64]) -> Vec<f64> {
    if c.len() == 1 {
        return vec![c[0] - 0.5, c[0] + 0.5];
    }
    let n = c.len();
    let mut e = Vec::with_capacity(n + 1);
    e.push(c[0] - (c[1] - c[0]) / 2.0);
    e.extend(c.windows(2).map(|w| w[0].midpoint(w[1])));
    e.push(c[n - 1] + (c[n - 1] - c[n - 2]) / 2.0);
    e
}

fn check_coordinates(c: &[f64], what: &str) -> Result<()> {
    ensure!(!c.is_empty(), "{what} is empty");
    ensure!(
        c.iter().all(|v| v.is_finite()),
        "{what} contains a non-finite value"
    );
    let increasing = c.windows(2).all(|w| w[0] < w[1]);
    let decreasing = c.windows(2).all(|w| w[0] > w[1]);
    ensure!(
        increasing || decreasing,
        "{what} must be strictly increasing or strictly decreasing"
    );
    Ok(())
}

fn prepare_heatmap(h: &Heatmap) -> Result<PreparedHeatmap> {
    ensure!(
        !h.values.is_empty(),
        "nothing to draw: the heatmap has no rows"
    );
    check_coordinates(&h.x_values, "x_values")?;
    check_coordinates(&h.y_values, "y_values")?;
    ensure!(
        h.values.len() == h.y_values.len(),
        "values has {} rows but y_values has {} entries",
        h.values.len(),
        h.y_values.len()
    );
    for (i, row) in h.values.iter().enumerate() {
        ensure!(
            row.len() == h.x_values.len(),
            "row {i} of values has {} entries but x_values has {}",
            row.len(),
            h.x_values.len()
        );
    }
    let mut notes = Vec::new();
    let data = extent(h.values.iter().flatten().copied());
    let missing = h.values.iter().flatten().filter(|v| !v.is_finite()).count();
    if missing > 0 {
        let total = h.values.len() * h.x_values.len();
        notes.push(format!(
            "Grey cells: no data (NaN or infinite) \u{2014} {missing} of {total} cells."
        ));
    }
    let (vmin, vmax) = match h.value_range {
        Some(r) => {
            let r = plot_range(r, false, "value")?;
            if let Some((a, b)) = data
                && (a < r.0 || b > r.1)
            {
                notes.push(format!(
                    "Values outside the colour scale {} to {} are drawn with its end colours \
                         (data range {} to {}).",
                    fmt_plain(r.0),
                    fmt_plain(r.1),
                    fmt_plain(a),
                    fmt_plain(b)
                ));
            }
            r
        }
        None => match data {
            Some((a, b)) if b > a => (a, b),
            Some((a, b)) => padded((a, b), 0.0, false),
            None => (0.0, 1.0),
        },
    };
    let x_edges = cell_edges(&h.x_values);
    let y_edges = cell_edges(&h.y_values);
    let xr = extent(x_edges.iter().copied()).expect("finite edges");
    let yr = extent(y_edges.iter().copied()).expect("finite edges");
    Ok(PreparedHeatmap {
        xa: Axis::linear(xr.0, xr.1, 8, None),
        ya: Axis::linear(yr.0, yr.1, 6, None),
        va: Axis::linear(vmin, vmax, 6, None),
        x_edges,
        y_edges,
        vmin,
        vmax,
        notes,
    })
}

fn draw_heatmap(area: &Area<'_>, h: &Heatmap, prep: &PreparedHeatmap) -> Result<()> {
    let body = draw_frame(area, &h.title, h.subtitle.as_deref(), &prep.notes)?;
    // The colour bar's strip: gap, bar, ticks and labels, description.
    let mut widest = 0;
    for &t in &prep.va.major {
        widest = widest.max(text_width(&body, &prep.va.label(t), font(TICK_LABEL_PX))?);
    }
    let desc = if h.colorbar_label.trim().is_empty() {
        0
    } else {
        (AXIS_LABEL_PX * 1.5) as u32
    };
    let bar_labels = widest + 20 + desc;
    let (bw, _) = body.dim_in_pixel();
    let (main, bar) =
        body.split_horizontally(bw.saturating_sub(COLORBAR_GAP + COLORBAR_WIDTH + bar_labels + 10));
    let mut ctx = build_chart(&main, &prep.xa, &prep.ya, &h.x_label, &h.y_label, false, 20)?;
    let scale = prep.vmax - prep.vmin;
    let color_of = |v: f64| {
        if v.is_finite() {
            viridis((v - prep.vmin) / scale).to_plotters()
        } else {
            NO_DATA_GREY
        }
    };
    ctx.draw_series(h.values.iter().enumerate().flat_map(|(r, row)| {
        row.iter().enumerate().map(move |(c, &v)| {
            Rectangle::new(
                [
                    (prep.x_edges[c], prep.y_edges[r]),
                    (prep.x_edges[c + 1], prep.y_edges[r + 1]),
                ],
                color_of(v).filled(),
            )
        })
    }))?;
    // Re-draw the frame on top of the cells.
    let (x0, x1, y0, y1) = (prep.xa.lo, prep.xa.hi, prep.ya.lo, prep.ya.hi);
    ctx.draw_series(std::iter::once(PathElement::new(
        vec![(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)],
        line_style(INK, 1),
    )))?;

    // The colour bar: its own small chart, vertically aligned with the heatmap.
    let bar_axis = Axis::linear(0.0, 1.0, 1, Some(Vec::new()));
    let mut bar_ctx = ChartBuilder::on(&bar)
        .margin_top(8)
        .margin_bottom(8 + x_label_area(&h.x_label))
        .margin_left(COLORBAR_GAP)
        .margin_right(10)
        .set_label_area_size(LabelAreaPosition::Right, bar_labels)
        .build_cartesian_2d(bar_axis, prep.va.clone())?;
    let fmt = |t: &f64| prep.va.label(*t);
    bar_ctx
        .configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_desc(h.colorbar_label.as_str())
        .axis_desc_style(TextStyle::from(font(AXIS_LABEL_PX)).color(&INK))
        .label_style(TextStyle::from(font(TICK_LABEL_PX)).color(&INK))
        .y_label_formatter(&fmt)
        .axis_style(ShapeStyle::from(INK.mix(0.8)).stroke_width(1))
        .set_all_tick_mark_size(6)
        .draw()?;
    let steps = 256;
    let (vmin, vmax) = (prep.vmin, prep.vmax);
    bar_ctx.draw_series((0..steps).map(|i| {
        let a = vmin + scale * i as f64 / steps as f64;
        let b = vmin + scale * (i + 1) as f64 / steps as f64;
        Rectangle::new(
            [(0.0, a), (1.0, b)],
            viridis((i as f64 + 0.5) / steps as f64)
                .to_plotters()
                .filled(),
        )
    }))?;
    bar_ctx.draw_series(std::iter::once(PathElement::new(
        vec![
            (0.0, vmin),
            (1.0, vmin),
            (1.0, vmax),
            (0.0, vmax),
            (0.0, vmin),
        ],
        line_style(INK, 1),
    )))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Unit tests of the pure helpers (the public API is tested in tests/plot.rs)
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_labels_are_clean() {
        let axis = Axis::log(-12.3, -0.7, None);
        let labels: Vec<String> = axis.major.iter().map(|&t| axis.label(t)).collect();
        assert!(
            labels
                .iter()
                .all(|l| !l.contains("999") && !l.contains("000")),
            "{labels:?}"
        );
        assert!(labels.contains(&"1e-5".to_string()) || labels.contains(&"1e-6".to_string()));

        let axis = Axis::log(-2.2, 1.3, None);
        let labels: Vec<String> = axis.major.iter().map(|&t| axis.label(t)).collect();
        assert_eq!(labels, ["0.01", "0.1", "1", "10"]);

        let axis = Axis::log(-0.2, 0.9, None);
        let labels: Vec<String> = axis.major.iter().map(|&t| axis.label(t)).collect();
        assert_eq!(labels, ["1", "2", "5"]);
    }

    #[test]
    fn linear_labels_have_no_float_noise() {
        let axis = Axis::linear(0.0, 0.7, 7, None);
        let labels: Vec<String> = axis.major.iter().map(|&t| axis.label(t)).collect();
        assert_eq!(
            labels,
            ["0.0", "0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7"]
        );
        let axis = Axis::linear(-1.0, 1.0, 4, None);
        let labels: Vec<String> = axis.major.iter().map(|&t| axis.label(t)).collect();
        assert_eq!(labels, ["-1.0", "-0.5", "0.0", "0.5", "1.0"]);
    }

    #[test]
    fn number_formatting() {
        assert_eq!(fmt_sci(1e-5), "1e-5");
        assert_eq!(fmt_sci(1.0), "1e0");
        assert_eq!(fmt_sci(2.5e3), "2.5e3");
        assert_eq!(fmt_plain(0.1), "0.1");
        assert_eq!(fmt_plain(10f64.powf(1.0)), "10");
        assert_eq!(fmt_plain(10f64.powf(64f64.log10())), "64");
        assert_eq!(fmt_plain(0.999_999_999_999_999_9), "1");
    }

    #[test]
    fn clipping() {
        let b = Bounds {
            x0: 0.0,
            x1: 1.0,
            y0: 0.0,
            y1: 1.0,
        };
        let runs = clip_polyline(&[(-1.0, 0.5), (0.5, 0.5), (0.5, 2.0), (0.8, 0.5)], &b);
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0], vec![(0.0, 0.5), (0.5, 0.5), (0.5, 1.0)]);
        let poly = clip_polygon(&[(-1.0, -1.0), (2.0, -1.0), (2.0, 0.5), (-1.0, 0.5)], &b);
        assert!(poly.iter().all(|p| b.contains(*p)));
        assert_eq!(poly.len(), 4);
    }

    #[test]
    fn viridis_ends() {
        assert_eq!(viridis(0.0), Color::rgb(0x44, 0x01, 0x54));
        assert_eq!(viridis(1.0), Color::rgb(0xfd, 0xe7, 0x25));
        assert_eq!(viridis(2.0), viridis(1.0));
        assert_eq!(viridis(f64::NAN), viridis(0.0));
    }

    #[test]
    fn text_is_rendered_with_the_embedded_font() {
        // Draws a word into a blank buffer: with no usable font this would panic or leave the
        // buffer white. The ab_glyph backend never looks at system fonts.
        let buf = render_to_buffer((200, 60), |root| {
            root.draw_text("Gradient", &TextStyle::from(font(28.0)).color(&INK), (5, 5))?;
            Ok(())
        })
        .expect("render");
        let dark = buf.chunks(3).filter(|p| p[0] < 128).count();
        assert!(dark > 100, "only {dark} dark pixels");
    }

    #[test]
    fn legend_goes_to_the_empty_corner() {
        // A line across the top: both upper corners are taken.
        let samples: Vec<Pt> = (0..100).map(|i| (i as f64 / 100.0, 0.9)).collect();
        assert_eq!(
            emptiest_position(&samples, (300, 100), (1000, 500)),
            LegendPos::LowerRight
        );
        // Everything taken but the middle of the right edge.
        let mut samples: Vec<Pt> = (0..=100).map(|i| (i as f64 / 100.0, 0.95)).collect();
        samples.extend((0..=100).map(|i| (i as f64 / 100.0, 0.05)));
        samples.extend((0..=100).map(|i| (0.1, i as f64 / 100.0)));
        assert_eq!(
            emptiest_position(&samples, (300, 100), (1000, 500)),
            LegendPos::MiddleRight
        );
    }
}
